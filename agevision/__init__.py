from agevision.errors import AgevisionError

__all__ = ["AgevisionError"]
