// The seed's useVisitorWebSocket, kept as its callers see it (same name,
// same arguments, same result) and built on @footfall/client's hook: the
// token goes as the `bearer` subprotocol, pings and reconnects live in the
// client, 4004 asks for a fresh token, and WebSocket falls back to SSE or
// polling where it is blocked.
import { useVisitorCount } from '@footfall/client/react';

export const useVisitorWebSocket = (communityId: string) => {
  const { count, isConnected, requestCount } = useVisitorCount(communityId, {
    url: 'https://api.example.com',
    // The seed read the JWT from localStorage; asked again on 4004.
    getToken: () => localStorage.getItem('jwt_token') ?? '',
  });
  const visitorCount: number = count ?? 0;
  return { visitorCount, isConnected, requestCount };
};
