// The seed's dashboard as it was, on a raw WebSocket, with the two changes
// --strict and footfall need: the state's type (the package's
// DashboardFigures) and the token as the `bearer` subprotocol. The
// package's ServerMessage union narrows on `type`.
import React, { useEffect, useState } from 'react';
import type { DashboardFigures, ServerMessage } from '@footfall/client';

export const VisitorDashboardRaw: React.FC<{ communityId: string }> = ({
  communityId
}) => {
  const [dashboardData, setDashboardData] = useState<DashboardFigures | null>(null);

  useEffect(() => {
    const ws = new WebSocket(
      `wss://api.example.com/ws/communities/${communityId}/visitor-dashboard/`,
      ['bearer', localStorage.getItem('jwt_token') ?? ''],
    );

    ws.onmessage = (event: MessageEvent<string>) => {
      const data = JSON.parse(event.data) as ServerMessage;

      if (data.type === 'dashboard_update') {
        setDashboardData({ ...data.data, timestamp: data.timestamp });
      } else if (data.type === 'analytics_update') {
        // Update specific metric
        console.log(`${data.metric}: ${String(data.value)}`);
      }
    };

    return () => ws.close();
  }, [communityId]);

  if (!dashboardData) return <div>Loading...</div>;

  return (
    <div className="visitor-dashboard">
      <h2>Visitor Analytics</h2>
      <div className="stats">
        <div>Real-time: {dashboardData.realtime_count}</div>
        <div>Today Auth: {dashboardData.today_visitors.authenticated_visitors}</div>
        <div>Today Anon: {dashboardData.today_visitors.anonymous_visitors}</div>
        <div>Today Total: {dashboardData.today_visitors.total_unique_visitors}</div>
      </div>
    </div>
  );
};
