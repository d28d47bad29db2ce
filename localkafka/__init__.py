"""Development tooling: run a real Apache Kafka (KRaft) cluster on this machine.

Not part of the gateway's runtime (`gateway` never imports it, except the lazy import
behind `kafka-gateway local-kafka`); the tests, the benchmark and `make run` use it.

- `localkafka.distribution`: download a pinned Kafka with Maven, build `java` commands.
- `localkafka.cluster`: process management, `LocalKafkaCluster` (start, stop, kill,
  restart brokers, wait until they serve).
- `localkafka.security`: security material of a secured client listener (TLS files,
  SASL users, JAAS, OAUTHBEARER validation).
- `localkafka.sasl_client`: a SASL/SCRAM client and SCRAM user creation, independent
  of the gateway's own implementation, which the tests check against real brokers.
- `localkafka.probes`: raw blocking probes (free ports, Metadata broker ids).
- `localkafka.cli`: the `kafka-gateway local-kafka` subcommand.
"""
