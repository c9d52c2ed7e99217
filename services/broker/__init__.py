"""The local Apache Kafka broker (single node, KRaft) the project starts by itself.

Jars come from Maven Central through ``services/broker/pom.xml`` (``make kafka``), cached under
``.cache/kafka/lib``. See :mod:`services.broker.launcher`.
"""
