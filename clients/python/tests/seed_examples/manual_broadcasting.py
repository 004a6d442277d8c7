from footfall import visitor_broadcaster

# Broadcast visitor count
visitor_broadcaster.broadcast_visitor_count(
    community_id='123e4567-e89b-12d3-a456-426614174000',
    count=42,
    change=1
)

# Broadcast specific metric
visitor_broadcaster.broadcast_analytics_metric(
    community_id='123e4567-e89b-12d3-a456-426614174000',
    metric='conversion_rate',
    value=14.5
)
