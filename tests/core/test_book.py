"""The block book's transition table: every stage and every event, the impossible ones included.

Each row starts block 5 in one stage, applies one event of the book's API and
gives the stage it ends in (``-``: no record; ``failed~`` with a retry time,
``failed!`` without) and what the call returned. Rows marked impossible are
events the domain never sends in that stage (``busy()`` drops an add for a block
online, in a phase or being verified; only a phase reports on the blocks it took;
only the verifier gives verdicts); the book still does something defined for
them, pinned here. Every row also keeps the book's invariants: a block is queued
exactly when its record says so, and the failed and verifying counts match the records.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hotplugd.engine.book import BlockBook, Stage
from hotplugd.engine.queue import Waiting
from hotplugd.model import Block, Outcome, RescanReason, State

OFFLINE = Block(5, 128 << 20)
ONLINE = Block(5, 128 << 20, state=State.ONLINE, valid_zones=("Normal",))
NOW = 100.0
RETRY_AFTER = 10.0  # a transient failure at 50 is due again at 60, before NOW


def in_phase(book: BlockBook) -> None:
    book.queue_block(OFFLINE, 1.0)
    assert [w.block.index for w in book.take()] == [5]


def failed(outcome: Outcome) -> Callable[[BlockBook], None]:
    def make(book: BlockBook) -> None:
        in_phase(book)
        book.finished(OFFLINE, outcome, 50.0, RETRY_AFTER)
    return make


STAGES: dict[str, Callable[[BlockBook], object]] = {
    "unknown": lambda book: None,
    "queued": lambda book: book.queue_block(OFFLINE, 1.0),
    "in_phase": in_phase,
    "in_phase_added_again": lambda book: (in_phase(book), book.announced_again(5)),
    "online": lambda book: book.apply_scan([ONLINE], RescanReason.START, 1.0),
    "failed_retry": failed(Outcome.TRANSIENT),
    "failed_for_good": failed(Outcome.PERMANENT),
    "removed": lambda book: (in_phase(book), book.remove(5)),
    "verify": lambda book: book.verify(ONLINE, 1.0, 50.0),
}

EVENTS: dict[str, Callable[[BlockBook], object]] = {
    "add": lambda book: book.queue_block(OFFLINE, NOW),
    "announced_again": lambda book: book.announced_again(5),
    "remove": lambda book: book.remove(5),
    "came_online": lambda book: (lambda r: (r[0] is not None, r[1], r[2]))(book.came_online(5)),
    "verify": lambda book: book.verify(ONLINE, None, NOW),
    "settled_online": lambda book: book.settled_online(ONLINE),
    "forget": lambda book: book.forget(5),
    "went_offline": lambda book: book.went_offline(5),
    "take": lambda book: [w.block.index for w in book.take()],
    "found_online": lambda book: book.found_online(ONLINE, 1.0, NOW, verify=False),
    "found_online_verify": lambda book: book.found_online(ONLINE, 1.0, NOW, verify=True),
    "untouched": lambda book: book.untouched(Waiting(OFFLINE, 1.0)),
    "finished_onlined": lambda book: book.finished(OFFLINE, Outcome.ONLINED, NOW, RETRY_AFTER),
    "finished_transient": lambda book: book.finished(OFFLINE, Outcome.TRANSIENT, NOW, RETRY_AFTER),
    "finished_permanent": lambda book: book.finished(OFFLINE, Outcome.PERMANENT, NOW, RETRY_AFTER),
    "finished_gone": lambda book: book.finished(OFFLINE, Outcome.GONE, NOW, RETRY_AFTER),
    "finished_kernel_deferred": lambda book: book.finished(OFFLINE, Outcome.KERNEL_DEFERRED, NOW, RETRY_AFTER),
    "retry_due": lambda book: book.requeue_due(NOW),
    "scan_offline": lambda book: book.apply_scan([OFFLINE], RescanReason.START, NOW),
    "scan_offline_request": lambda book: book.apply_scan([OFFLINE], RescanReason.REQUEST, NOW),
    "scan_online": lambda book: book.apply_scan([ONLINE], RescanReason.START, NOW),
    "scan_absent": lambda book: book.apply_scan([], RescanReason.START, NOW),
}

# stage                 event                     ends in, returns
TABLE = """
unknown               add                       queued True
unknown               announced_again           - False
unknown               remove                    -
unknown               came_online               online (False,False,True)
unknown               verify                    verify
unknown               settled_online            -
unknown               forget                    -
unknown               went_offline              -
unknown               take                      - []
unknown               found_online              online
unknown               found_online_verify       verify
unknown               untouched                 queued
unknown               finished_onlined          online True
unknown               finished_transient        failed~ False
unknown               finished_permanent        failed! False
unknown               finished_gone             - False
unknown               finished_kernel_deferred  verify False
unknown               retry_due                 -
unknown               scan_offline              queued
unknown               scan_offline_request      queued
unknown               scan_online               online
unknown               scan_absent               -

queued                add                       queued True
queued                announced_again           queued False
queued                remove                    -
queued                came_online               online (True,False,True)
queued                verify                    verify
# a read-back's verdict moves only a block being verified
queued                settled_online            queued
queued                forget                    queued
queued                went_offline              queued
queued                take                      in_phase [5]
queued                found_online              queued
queued                found_online_verify       queued
queued                untouched                 queued
queued                finished_onlined          queued True
# removed and added again during its phase: the new queue entry stands
queued                finished_transient        queued False
queued                finished_permanent        queued False
queued                finished_gone             queued False
queued                finished_kernel_deferred  queued False
queued                retry_due                 queued
queued                scan_offline              queued
queued                scan_offline_request      queued
queued                scan_online               queued
queued                scan_absent               queued

# impossible: busy() is true, the domain drops the add
in_phase              add                       queued True
in_phase              announced_again           in_phase True
in_phase              remove                    removed
in_phase              came_online               in_phase (False,False,False)
in_phase              verify                    verify
in_phase              settled_online            in_phase
in_phase              forget                    in_phase
in_phase              went_offline              in_phase
in_phase              take                      in_phase []
in_phase              found_online              online
in_phase              found_online_verify       verify
in_phase              untouched                 queued
in_phase              finished_onlined          online True
in_phase              finished_transient        failed~ False
in_phase              finished_permanent        failed! False
in_phase              finished_gone             - False
in_phase              finished_kernel_deferred  verify False
in_phase              retry_due                 in_phase
in_phase              scan_offline              in_phase
in_phase              scan_offline_request      in_phase
in_phase              scan_online               in_phase
in_phase              scan_absent               in_phase

# impossible: busy()
in_phase_added_again  add                       queued True
in_phase_added_again  announced_again           in_phase True
in_phase_added_again  remove                    removed
in_phase_added_again  came_online               in_phase (False,False,False)
in_phase_added_again  verify                    verify
in_phase_added_again  settled_online            in_phase
in_phase_added_again  forget                    in_phase
in_phase_added_again  went_offline              in_phase
in_phase_added_again  take                      in_phase []
in_phase_added_again  found_online              online
in_phase_added_again  found_online_verify       verify
in_phase_added_again  untouched                 queued
in_phase_added_again  finished_onlined          online True
# announced again while it failed: queued at once, not failed
in_phase_added_again  finished_transient        queued False
in_phase_added_again  finished_permanent        failed! False
in_phase_added_again  finished_gone             - False
in_phase_added_again  finished_kernel_deferred  verify False
in_phase_added_again  retry_due                 in_phase
in_phase_added_again  scan_offline              in_phase
in_phase_added_again  scan_offline_request      in_phase
in_phase_added_again  scan_online               in_phase
in_phase_added_again  scan_absent               in_phase

# impossible: busy()
online                add                       queued True
online                announced_again           online False
online                remove                    -
online                came_online               online (False,False,False)
online                verify                    verify
online                settled_online            online
online                forget                    online
online                went_offline              -
online                take                      online []
online                found_online              online
online                found_online_verify       verify
# impossible: a phase reports only on blocks in_phase, removed, queued again or forgotten
online                untouched                 queued
# impossible from here on: a phase's report wins
online                finished_onlined          online True
online                finished_transient        failed~ False
online                finished_permanent        failed! False
online                finished_gone             - False
online                finished_kernel_deferred  verify False
online                retry_due                 online
online                scan_offline              queued
online                scan_offline_request      queued
online                scan_online               online
online                scan_absent               -

failed_retry          add                       queued True
failed_retry          announced_again           failed~ False
failed_retry          remove                    -
failed_retry          came_online               online (False,True,True)
failed_retry          verify                    verify
failed_retry          settled_online            failed~
failed_retry          forget                    failed~
failed_retry          went_offline              failed~
failed_retry          take                      failed~ []
failed_retry          found_online              online
failed_retry          found_online_verify       verify
failed_retry          untouched                 queued
failed_retry          finished_onlined          online True
failed_retry          finished_transient        failed~ False
failed_retry          finished_permanent        failed! False
failed_retry          finished_gone             - False
failed_retry          finished_kernel_deferred  verify False
failed_retry          retry_due                 queued
failed_retry          scan_offline              queued
failed_retry          scan_offline_request      queued
failed_retry          scan_online               online
failed_retry          scan_absent               -

failed_for_good       add                       queued True
failed_for_good       announced_again           failed! False
failed_for_good       remove                    -
failed_for_good       came_online               online (False,False,True)
failed_for_good       verify                    verify
failed_for_good       settled_online            failed!
failed_for_good       forget                    failed!
failed_for_good       went_offline              failed!
failed_for_good       take                      failed! []
failed_for_good       found_online              online
failed_for_good       found_online_verify       verify
failed_for_good       untouched                 queued
failed_for_good       finished_onlined          online True
failed_for_good       finished_transient        failed~ False
failed_for_good       finished_permanent        failed! False
failed_for_good       finished_gone             - False
failed_for_good       finished_kernel_deferred  verify False
failed_for_good       retry_due                 failed!
# permanent: only an operator's rescan (SIGUSR1) tries it again
failed_for_good       scan_offline              failed!
failed_for_good       scan_offline_request      queued
failed_for_good       scan_online               online
failed_for_good       scan_absent               -

removed               add                       queued True
removed               announced_again           removed False
# removed twice: forgotten; the phase's report then finds no record
removed               remove                    -
removed               came_online               removed (False,False,False)
removed               verify                    verify
removed               settled_online            removed
removed               forget                    removed
removed               went_offline              removed
removed               take                      removed []
removed               found_online              -
removed               found_online_verify       -
removed               untouched                 -
# onlined, then removed: counted, and forgotten (an add again is news)
removed               finished_onlined          - True
removed               finished_transient        - False
removed               finished_permanent        - False
removed               finished_gone             - False
removed               finished_kernel_deferred  - False
removed               retry_due                 removed
removed               scan_offline              removed
removed               scan_offline_request      removed
removed               scan_online               removed
removed               scan_absent               removed

# impossible: busy()
verify                add                       queued True
verify                announced_again           verify False
verify                remove                    -
# the read-back decides
verify                came_online               verify (False,False,False)
verify                verify                    verify
verify                settled_online            online
verify                forget                    -
verify                went_offline              verify
verify                take                      verify []
verify                found_online              online
verify                found_online_verify       verify
verify                untouched                 queued
verify                finished_onlined          online True
verify                finished_transient        failed~ False
verify                finished_permanent        failed! False
verify                finished_gone             - False
verify                finished_kernel_deferred  verify False
verify                retry_due                 verify
verify                scan_offline              verify
verify                scan_offline_request      verify
verify                scan_online               verify
verify                scan_absent               verify
"""


def rows() -> list[tuple[str, str, str]]:
    parsed = []
    for line in TABLE.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            stage, event, expected = line.split(maxsplit=2)
            parsed.append((stage, event, expected))
    return parsed


def test_the_table_has_every_stage_and_event_once() -> None:
    assert [(s, e) for s, e, _ in rows()] == [(s, e) for s in STAGES for e in EVENTS]
    started = {s: BlockBook(10) for s in STAGES}
    for name, book in started.items():
        STAGES[name](book)
    assert {book.stage(5) for book in started.values()} == {None, *Stage}  # every stage is a starting point


def code(book: BlockBook) -> str:
    stage = book.stage(5)
    if stage is None:
        return "-"
    if stage is Stage.FAILED:
        return "failed~" if book.next_retry(0.0) is not None else "failed!"
    return stage.value


def check_invariants(book: BlockBook) -> None:
    stage = book.stage(5)
    assert (5 in book.queue) == (stage is Stage.QUEUED), "queued exactly when the record says so"
    assert book.failed_count == (1 if stage is Stage.FAILED else 0) == len(book.failed)
    assert book.verifying == (1 if stage is Stage.VERIFY else 0)
    assert (book.next_poll(NOW) is not None) == (stage is Stage.VERIFY)
    assert book.in_phase == ({5} if stage in (Stage.IN_PHASE, Stage.REMOVED) else set())
    assert book.busy(5) == (stage in (Stage.ONLINE, Stage.IN_PHASE, Stage.VERIFY))


@pytest.mark.parametrize(("stage", "event", "expected"), rows(), ids=[f"{s}-{e}" for s, e, _ in rows()])
def test_transition(stage: str, event: str, expected: str) -> None:
    book = BlockBook(10)
    STAGES[stage](book)
    returned = EVENTS[event](book)
    got = code(book) if returned is None else f"{code(book)} {str(returned).replace(' ', '')}"
    assert got == expected
    check_invariants(book)


def test_a_full_queue_refuses_and_a_due_retry_stays_failed() -> None:
    """The one event whose result depends on another block: the queue's bound."""
    book = BlockBook(1)
    failed(Outcome.TRANSIENT)(book)
    book.queue_block(Block(9, 128 << 20), 55.0)  # takes the only place
    assert not book.queue_block(Block(10, 128 << 20), 55.0) and book.queue.overflowed
    book.requeue_due(NOW)
    assert code(book) == "failed~" and book.next_retry(NOW) == 0.0  # due again at the next turn
    check_invariants(book)


def test_a_replaced_record_is_no_longer_current() -> None:
    """What the verifier checks before its verdict: remove and add again while a read-back ran."""
    book = BlockBook(10)
    book.verify(ONLINE, 1.0, 50.0)
    [record] = book.due_verifications(NOW)
    assert book.current(record)
    book.remove(5)
    book.queue_block(OFFLINE, 60.0)
    assert not book.current(record)
