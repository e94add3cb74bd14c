"""The membership contract over the built-in strategies, and proof that it
catches a strategy that breaks it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hedgeplug.membership.heartbeat import HeartbeatOptions
from hedgeplug.membership.heartbeat import make as make_heartbeat
from hedgeplug.plugin import Member, NodeContext, View, hookimpl
from hedgeplug.testing.membership_contract import (
    MembershipContract,
    MembershipUnderTest,
    check_crash_detection,
    check_join,
    check_scale_up,
)

pytest_plugins = ("pytester",)


class TestHeartbeat(MembershipContract):
    @pytest.fixture
    def membership(self) -> MembershipUnderTest:
        # Stated in the strategy's documentation: a join within one round trip
        # of the first beat (one interval) plus the batch delay; a leave within
        # one round trip plus the batch delay, both far below convergence.
        return MembershipUnderTest(
            "heartbeat", {"interval": "1s", "missed": 3}, join=2.0, leave=1.0
        )


class TestGossip(MembershipContract):
    @pytest.fixture
    def membership(self) -> MembershipUnderTest:
        # A goodbye goes straight to every live member: one message delay.
        return MembershipUnderTest("gossip", {"profile": "lan"}, leave=1.0)


# ---------------------------------------------------------------- a broken strategy


class NeverForgets:
    """A node context whose published views keep every member ever seen: the
    heartbeat strategy on top of it never drops a crashed (or departed) node."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._seen: dict[str, Member] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def publish_view(self, view: View) -> None:
        for member in view.live:
            self._seen[member.id] = member
        self._ctx.publish_view(View.of(self._seen.values(), view.version.token, view.version.seq))


class NeverForgetsPlugin:
    """Registers membership "never-forgets": heartbeat that keeps the dead."""

    @hookimpl
    def hedgeplug_register_memberships(self, register: Any) -> None:
        register(
            "never-forgets",
            lambda options, ctx: make_heartbeat(options, NeverForgets(ctx)),
            HeartbeatOptions,
        )


BROKEN = MembershipUnderTest("never-forgets", {"interval": "1s"}, plugins=(NeverForgetsPlugin(),))


def test_a_plugin_object_strategy_passes_what_it_does_not_break() -> None:
    # Joins still work: the plugin object reached the simulator's registry.
    check_join(BROKEN, size=5)


def test_a_strategy_that_never_removes_crashed_members_fails_crash_detection() -> None:
    with pytest.raises(AssertionError) as info:
        check_crash_detection(BROKEN)
    message = str(info.value)
    assert re.search(r"crash detection: n\d+ still in the view of", message), message
    assert "detection bound" in message


def test_plain_swim_with_service_style_joins_fails_the_scale_up_check() -> None:
    # Gossip without its healing is plain SWIM: one-random joins split it.
    plain_swim = MembershipUnderTest("gossip", {"profile": "lan", "heal": False})
    with pytest.raises(AssertionError) as info:
        check_scale_up(plain_swim, seeds=[1])
    assert "views did not agree within the convergence bound" in str(info.value)


def test_as_a_plugin_author_sees_it_each_broken_promise_is_its_own_failure(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_mine="""
        import pytest
        from hedgeplug.testing.membership_contract import MembershipContract, MembershipUnderTest
        from test_membership_contract import NeverForgetsPlugin

        class TestNeverForgets(MembershipContract):
            @pytest.fixture
            def membership(self):
                return MembershipUnderTest(
                    "never-forgets", {"interval": "1s"}, plugins=(NeverForgetsPlugin(),), seeds=(1,)
                )
        """
    )
    pytester.syspathinsert(str(Path(__file__).parent))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    # Keeping departed members breaks leave, crash detection and the leader change;
    # joins, the scale-up and replay still hold.
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_mine.py::TestNeverForgets::test_graceful_leave*",
            "FAILED test_mine.py::TestNeverForgets::test_crash_detection*",
            "FAILED test_mine.py::TestNeverForgets::test_leader_change*",
        ]
    )
