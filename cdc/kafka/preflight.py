"""Edge: what the preflight needs to know of Kafka, asked without writing anything.

Reachability (the bootstrap answers within ``ADMIN_TIMEOUT_S``), each topic the connector
needs (its cleanup policy if it exists; whether the brokers would create it if not, by a
``validate_only`` creation, which checks ACLs, replication factor and policies and
creates nothing), the broker's ``transaction.max.timeout.ms``, and the ACLs on
TransactionalId resources (DescribeAcls; none on a cluster without an authorizer). The
topics and their policies come from ``cdc.kafka.topics``, which makes them at start. No
judgement here: facts for ``cdc.check.findings``.
"""

from __future__ import annotations

from collections.abc import Iterable

from cdc.check.facts import AclFacts, KafkaFacts, TopicFacts
from cdc.kafka.topics import KafkaAdmin, TopicSpec

__all__ = ["gather_kafka_facts"]


def gather_kafka_facts(admin: KafkaAdmin, topics: Iterable[tuple[TopicSpec, str]]) -> KafkaFacts:
    """Ask Kafka about the connector's ``(spec, role)`` topics.

    Raises:
        SinkError: Kafka did not answer (retryable) or refused the principal (not
            retryable); the message carries the fix.
    """
    wanted = list(topics)
    existing = admin.list_topics()
    brokers, broker = admin.broker_config()
    missing = [spec for spec, _ in wanted if spec.name not in existing]
    refused = admin.validate_new_topics(missing)
    facts: list[TopicFacts] = []
    for spec, role in wanted:
        if spec.name in existing:
            # A refused DescribeConfigs raises: the start would fail on it the same way.
            policy = admin.topic_configs(spec.name).get("cleanup.policy")
            facts.append(TopicFacts(spec.name, role, spec.cleanup_policy, True, policy))
        else:
            error = refused.get(spec.name)
            facts.append(
                TopicFacts(
                    spec.name,
                    role,
                    spec.cleanup_policy,
                    False,
                    create_error=None if error is None else str(error),
                )
            )
    timeout = None if broker is None else broker.get("transaction.max.timeout.ms")
    # The broker's authorizer.class.name: empty without one (then every principal may do
    # everything, and DescribeAcls answers with no binding at all).
    authorizer = None if broker is None else bool(broker.get("authorizer.class.name"))
    acls = admin.transactional_id_acls() if authorizer else []
    if acls is None:
        authorizer, acls = None, []  # an authorizer whose ACLs we may not read
    supers = ((broker or {}).get("super.users") or "").split(";")
    username = admin.common.get("sasl.username")
    mechanism = str(admin.common.get("sasl.mechanism", "GSSAPI")).upper()
    return KafkaFacts(
        bootstrap_servers=admin.bootstrap_servers,
        brokers=brokers,
        topics=tuple(facts),
        transaction_max_timeout_ms=None if timeout is None else int(timeout),
        authorizer=authorizer,
        # PLAIN and SCRAM name the principal User:<sasl.username>; others (client
        # certificates, Kerberos, OAuth) map it on the broker, which the check cannot see.
        principal=f"User:{username}"
        if username and (mechanism == "PLAIN" or mechanism.startswith("SCRAM"))
        else None,
        transactional_acls=tuple(AclFacts(*acl) for acl in acls),
        super_users=tuple(s.strip() for s in supers if s.strip()),
    )
