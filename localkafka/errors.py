"""The one error type of the local Kafka launcher."""


class LocalKafkaError(RuntimeError):
    """The local cluster could not be started or controlled; the message says why."""
