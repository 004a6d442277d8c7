from footfall import visitor_broadcaster

@app.task
def update_visitor_analytics(community_id):
    """Periodic task to update visitor analytics."""

    # Get latest stats
    stats = get_today_visitors(community_id)

    # Broadcast to dashboard viewers
    visitor_broadcaster.broadcast_dashboard_update(
        community_id,
        {
            'today_visitors': stats,
            'realtime_count': get_realtime_count(community_id)
        }
    )
