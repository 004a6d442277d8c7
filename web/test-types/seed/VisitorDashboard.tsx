// VisitorDashboard.tsx: the seed's dashboard on @footfall/client's hook
// (stream 'dashboard'). The seed's own version, useState(null) then
// dashboardData.realtime_count, does not compile under --strict: the state
// is typed `null`. Here it is DashboardFigures | null.
import React from 'react';
import { useVisitorCount } from '@footfall/client/react';
import type { DashboardFigures } from '@footfall/client';

export const VisitorDashboard: React.FC<{ communityId: string }> = ({
  communityId
}) => {
  const { dashboard, metrics } = useVisitorCount(communityId, {
    url: 'https://api.example.com',
    stream: 'dashboard',
    getToken: () => localStorage.getItem('jwt_token') ?? '',
    // The seed logged each analytics_update.
    onAnalytics: ({ metric, value }) => console.log(`${metric}: ${String(value)}`),
  });
  const dashboardData: DashboardFigures | null = dashboard;

  if (!dashboardData) return <div>Loading...</div>;

  return (
    <div className="visitor-dashboard">
      <h2>Visitor Analytics</h2>
      <div className="stats">
        <div>Real-time: {dashboardData.realtime_count}</div>
        <div>Today Auth: {dashboardData.today_visitors.authenticated_visitors}</div>
        <div>Today Anon: {dashboardData.today_visitors.anonymous_visitors}</div>
        <div>Today Total: {dashboardData.today_visitors.total_unique_visitors}</div>
        {Object.entries(metrics).map(([name, m]) => (
          <div key={name}>{name}: {String(m.value)}</div>
        ))}
      </div>
    </div>
  );
};
