// Type declarations of useVisitorCount.js, the React hook on footfall's
// browser client (React 16.8 and later). See docs/frontend.md.
import type {
  ClientOptions,
  DashboardFigures,
  Status,
  StreamName,
  TokenReason,
  Transport,
  TransportChoice,
} from '../footfall-client.js';

export interface VisitorCountOptions extends Partial<Omit<ClientOptions, 'community' | 'transport' | 'stream' | 'getToken' | 'token' | 'url'>> {
  /** The gateway's base URL (default: the page's origin); a new value reconnects. */
  url?: string;
  /** A JWT; a new value reconnects. */
  token?: string;
  /** Asked for a fresh JWT (on 4004, before expiry, and at start without token); may change identity on every render. */
  getToken?: (reason: TokenReason) => string | Promise<string>;
  /** Default 'auto'; a new value reconnects. */
  transport?: TransportChoice;
  /** Default 'visitors'; a new value reconnects. */
  stream?: StreamName;
  /**
   * true: without token and getToken, connect with no credential (a guest of a
   * public community, counted once per browser by its footfall_vid cookie);
   * false (default): wait for one.
   */
  guest?: boolean;
  /** false: stay disconnected (default true). */
  enabled?: boolean;
}

export interface VisitorCountState {
  /** The number of visitors present (dashboard stream: the realtime count); null before the first message. */
  count: number | null;
  /** 'idle' until the hook has a community and a credential to connect with. */
  status: Status;
  transport: Transport | null;
  isConnected: boolean;
  /** The last dashboard figures (stream 'dashboard'), or null. */
  dashboard: DashboardFigures | null;
  /** The latest value of each analytics metric seen (stream 'dashboard'). */
  metrics: Record<string, { value: unknown; timestamp?: string }>;
  /** Why the client stopped (4001-4003, or no fresh token), or null. */
  error: { code?: number | string; reason?: string } | null;
  /** Asks for the current count now. */
  requestCount: () => void;
}

/** The live visitor count of a community (or, with stream 'dashboard', its dashboard). */
export function useVisitorCount(communityId: string | null | undefined, options?: VisitorCountOptions): VisitorCountState;
export default useVisitorCount;
