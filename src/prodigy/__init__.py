"""prodigy: a durable, resumable MapReduce workflow runner."""

__version__ = "0.1.0"
