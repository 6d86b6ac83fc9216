"""The canonical feed's delivery: subscription senders, the outbound check, the feed role."""
