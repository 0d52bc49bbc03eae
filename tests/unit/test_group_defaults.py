from __future__ import annotations

from jobqueue.groups import read_groups_config

CONFIG = {"name": "config", "configMap": {"name": "jq-config"}}
CONFIG_MOUNT = {"name": "config", "mountPath": "/etc/jobqueue/config", "readOnly": True}


def test_default_volumes_reach_every_group_and_a_group_adds_or_replaces_by_name():
    config = read_groups_config({
        "defaults": {"volumes": [CONFIG], "volume_mounts": [CONFIG_MOUNT]},
        "resource_groups": {
            "spilly": {"volumes": [{"name": "spill", "emptyDir": {}}],
                       "volumeMounts": [{"name": "spill", "mountPath": "/spill"}]},
            "own-config": {"volumes": [{"name": "config", "configMap": {"name": "other"}}]},
        },
    })
    assert not config.errors
    groups = config.groups
    assert groups["default"].volumes == [CONFIG], "the implicit default group mounts the config too"
    assert groups["default"].volume_mounts == [CONFIG_MOUNT]
    assert groups["spilly"].volumes == [CONFIG, {"name": "spill", "emptyDir": {}}]
    assert groups["spilly"].volume_mounts == [CONFIG_MOUNT, {"name": "spill", "mountPath": "/spill"}]
    assert groups["own-config"].volumes == [{"name": "config", "configMap": {"name": "other"}}]
