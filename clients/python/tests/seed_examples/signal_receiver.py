from footfall import visitor_broadcaster
from django.db.models.signals import post_save

@receiver(post_save, sender=AnonymousSession)
def on_session_converted(sender, instance, **kwargs):
    """Broadcast when anonymous user converts."""
    if instance.converted_at:
        visitor_broadcaster.broadcast_analytics_metric(
            instance.community_id,
            'conversion',
            {
                'session_id': str(instance.id),
                'converted_at': instance.converted_at.isoformat()
            }
        )
