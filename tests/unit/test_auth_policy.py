"""The authorization matrix: every role × every action × whose job (own, same team, other team, no owner), each
pair asserted, with and without JOBQUEUE_USERS_SEE_TEAM_JOBS. The policy is pure: no Redis, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.policy import JOB_ACTIONS, LEAST_ROLE, AccessRules, Action, authorize

ALICE = {role: Identity(owner="alice", team="risk", role=role) for role in Role}
NO_TEAM_USER = Identity(owner="carol", team=None, role=Role.USER)

# whose job -> (job_owner, job_team)
JOBS = {
    "own": ("alice", "risk"),
    "own, other team": ("alice", "growth"),
    "same team": ("bob", "risk"),
    "other team": ("bob", "growth"),
    "no owner": (None, None),  # submitted before attribution
}
# (role, whose, users see team jobs) -> allowed, for every job action
JOB_MATRIX = {
    (Role.USER, "own", False): True,
    (Role.USER, "own, other team", False): True,
    (Role.USER, "same team", False): False,
    (Role.USER, "other team", False): False,
    (Role.USER, "no owner", False): False,
    (Role.USER, "own", True): True,
    (Role.USER, "own, other team", True): True,
    (Role.USER, "same team", True): True,
    (Role.USER, "other team", True): False,
    (Role.USER, "no owner", True): False,
    **{(role, whose, team): True for role in (Role.OPERATOR, Role.ADMIN) for whose in JOBS for team in (False, True)},
}
# role -> the actions not on one job it may do
OTHER_MATRIX = {
    Role.USER: {Action.SUBMIT_JOB, Action.LIST_JOBS, Action.CANCEL_MANY, Action.READ_STATUS, Action.READ_SCHEDULES,
                Action.READ_REGISTRY},
    Role.OPERATOR: {Action.SUBMIT_JOB, Action.LIST_JOBS, Action.CANCEL_MANY, Action.READ_STATUS,
                    Action.READ_SCHEDULES, Action.READ_REGISTRY, Action.READ_METRICS, Action.MANAGE_SCHEDULES},
    Role.ADMIN: set(Action) - JOB_ACTIONS,
}


def test_every_action_has_a_rule():
    assert set(LEAST_ROLE) | JOB_ACTIONS == set(Action)
    assert set(JOB_MATRIX) == {(r, w, t) for r in Role for w in JOBS for t in (False, True)}


@pytest.mark.parametrize(("role", "whose", "team_rule"), sorted(JOB_MATRIX, key=str))
@pytest.mark.parametrize("action", sorted(JOB_ACTIONS))
def test_job_actions(role, whose, team_rule, action):
    owner, team = JOBS[whose]
    decision = authorize(ALICE[role], action, owner, team, AccessRules(users_see_team_jobs=team_rule))
    assert decision.allowed is JOB_MATRIX[(role, whose, team_rule)], decision
    assert decision.reason
    # a user denied a job may not learn that it exists: the API answers "not found"
    assert decision.conceal is (not decision.allowed)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", sorted(set(Action) - JOB_ACTIONS))
def test_other_actions(role, action):
    decision = authorize(ALICE[role], action)
    assert decision.allowed is (action in OTHER_MATRIX[role]), decision
    assert not decision.conceal
    if not decision.allowed:
        assert f"needs role {LEAST_ROLE[action].value}" in decision.reason and role.value in decision.reason


def test_the_team_rule_needs_a_team_on_both_sides():
    rules = AccessRules(users_see_team_jobs=True)
    assert not authorize(NO_TEAM_USER, Action.READ_JOB, "bob", None, rules).allowed  # None == None is no team
    assert authorize(NO_TEAM_USER, Action.CANCEL_JOB, "carol", None, rules).allowed


def test_the_reason_says_what_a_user_may_do():
    denied = authorize(ALICE[Role.USER], Action.CANCEL_JOB, "bob", "risk", AccessRules(users_see_team_jobs=True))
    assert denied.allowed
    denied = authorize(ALICE[Role.USER], Action.CANCEL_JOB, "bob", "growth", AccessRules(users_see_team_jobs=True))
    assert denied.reason == "role user may jobs:cancel only its own jobs and its team's"
    denied = authorize(ALICE[Role.USER], Action.CANCEL_JOB, "bob", "growth")
    assert denied.reason == "role user may jobs:cancel only its own jobs"


def test_listing_shows_a_user_only_what_it_may_read():
    jobs = [("a1", "alice", "risk"), ("b1", "bob", "risk"), ("c1", "carol", "growth"), ("x", None, None)]
    user = ALICE[Role.USER]
    shown = [j for j, o, t in jobs if authorize(user, Action.READ_JOB, o, t).allowed]
    assert shown == ["a1"]
    shown = [j for j, o, t in jobs if authorize(user, Action.READ_JOB, o, t,
                                                 AccessRules(users_see_team_jobs=True)).allowed]
    assert shown == ["a1", "b1"]
    assert [j for j, o, t in jobs if authorize(ALICE[Role.OPERATOR], Action.READ_JOB, o, t).allowed] == [
        "a1", "b1", "c1", "x"]


def test_the_auth_package_imports_neither_manager_nor_consumer_and_the_policy_does_no_io():
    root = Path(__file__).resolve().parents[2] / "jobqueue" / "auth"
    for path in root.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert not {m for m in imported if m.split(".")[0] in ("manager", "consumer")}, path
        if path.name in ("policy.py", "identity.py"):
            assert imported <= {"__future__", "enum", "dataclasses", "jobqueue.auth.identity"}, (path, imported)
