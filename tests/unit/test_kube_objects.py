"""The consumer Deployment rendered from a group (pure) and the groups file's defaults and per-group errors."""

from __future__ import annotations

import kubernetes_validate
import pytest

from jobqueue.groups import parse_groups, read_groups_config
from jobqueue.settings import Settings
from manager.backends.kube_objects import CONFIG_HASH, consumer_deployment

SETTINGS = Settings(kubernetes_release="jq", kubernetes_namespace="data", kubernetes_consumer_image="img:1",
                    environment="prod")


def env_of(deployment):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in
            deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_group_renders_a_valid_deployment_with_its_limits_and_drain():
    groups = parse_groups({"resource_groups": {"big": {
        "max_instances": 4, "memory": "8GiB", "memory_limit_percent": 75, "termination_grace_period_seconds": 600,
        "resources": {"requests": {"cpu": "7"}, "limits": {"ephemeral-storage": "350Gi"}}}}})
    dep = consumer_deployment(groups["big"], SETTINGS, replicas=3)
    kubernetes_validate.validate(dep, "1.30.0", strict=True)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert dep["metadata"]["name"] == "jq-consumer-big" and dep["spec"]["replicas"] == 3
    assert container["resources"] == {"requests": {"cpu": "7", "memory": str(8 << 30)},
                                      "limits": {"ephemeral-storage": "350Gi", "memory": str(8 << 30)}}
    env = env_of(dep)
    assert env["JOBQUEUE_CONSUMER_DRAIN_SECONDS"] == "585" and pod["terminationGracePeriodSeconds"] == 600
    assert env["JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT"] == "75.0" and "JOBQUEUE_CONTAINER_MEMORY_BYTES" not in env
    assert env["JOBQUEUE_CONSUMER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # the kubelet probes the pod's IP: the endpoints bind all addresses there (loopback is the default)
    assert env["JOBQUEUE_CONSUMER_HTTP_PORT"] == "8080" and env["JOBQUEUE_HTTP_HOST"] == "0.0.0.0"
    assert pod["volumes"][0] == {"name": "work", "emptyDir": {"sizeLimit": "350Gi"}}


def test_the_config_hash_changes_with_the_config_only():
    g = parse_groups({"resource_groups": {"a": {"max_instances": 2}}})["a"]
    debug = {"max_instances": 2, "env": {"JOBQUEUE_LOG_LEVEL": "debug"}}
    changed = parse_groups({"resource_groups": {"a": debug}})["a"]
    digest = consumer_deployment(g, SETTINGS, 1)["metadata"]["annotations"][CONFIG_HASH]
    assert consumer_deployment(g, SETTINGS, 5)["metadata"]["annotations"][CONFIG_HASH] == digest
    assert consumer_deployment(changed, SETTINGS, 1)["metadata"]["annotations"][CONFIG_HASH] != digest


def test_no_image_is_an_error_naming_the_group():
    g = parse_groups({"resource_groups": {"etl": {}}})["etl"]
    with pytest.raises(ValueError, match="resource group 'etl': no image"):
        consumer_deployment(g, Settings(), 1)


def test_defaults_merge_into_every_group_and_broken_groups_are_reported_by_name():
    config = read_groups_config({
        "defaults": {"image": "img:2", "env": {"JOBQUEUE_LOG_LEVEL": "info"}, "nodeSelector": {"os": "linux"}},
        "resource_groups": {
            "a": {"env": {"JOBQUEUE_QUERY_THREADS": "2"}, "node_selector": {"pool": "x"}},
            "b": {"image": "img:3", "resources": {"limits": {"memory": "lots"}}},
        },
    }, "groups.yaml")
    assert set(config.groups) == {"a", "default"}
    a = config.groups["a"]
    assert a.image == "img:2" and a.env == {"JOBQUEUE_LOG_LEVEL": "info", "JOBQUEUE_QUERY_THREADS": "2"}
    assert a.node_selector == {"os": "linux", "pool": "x"}
    assert "groups.yaml: resource group 'b': resources.limits" in config.errors["b"]
    assert "not a Kubernetes quantity" in config.errors["b"]
