// VisitorCounter.tsx: the seed's component, unchanged.
import React from 'react';
import { useVisitorWebSocket } from './useVisitorWebSocket';

interface Props {
  communityId: string;
}

export const VisitorCounter: React.FC<Props> = ({ communityId }) => {
  const { visitorCount, isConnected } = useVisitorWebSocket(communityId);

  return (
    <div className="visitor-counter">
      <span className={`status-indicator ${isConnected ? 'online' : 'offline'}`} />
      <span className="count">{visitorCount}</span>
      <span className="label">visitors online</span>
    </div>
  );
};
