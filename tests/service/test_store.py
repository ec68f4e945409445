"""The same store tests on SQLite and, when PRIORAUTH_TEST_DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from priorauth import check
from priorauth.service.referrals import referral_data
from priorauth.service.store import Conflict, Store, migrate

from .conftest import DATA

D = dt.date(2026, 11, 20)


def _pair(name: str = "dm-steroid-intolerance.yaml"):
    det = check(DATA / name)
    return referral_data(det), det.to_dict()


def test_case_life_and_history(store: Store) -> None:
    case = store.add_cases([_pair()], "ann")[0]
    assert case.status == "ready" and case.version == 1 and len(case.id) >= 20
    case = store.add_event(case.id, "submitted", D, {}, "ann", version=1)
    case = store.add_event(case.id, "approved", D, {"authorization_number": "A1", "approved_units": 1476,
                                                   "start_date": "2026-12-01", "end_date": "2027-05-31"}, "ann")
    assert (case.status, case.auth_number, case.approved_units) == ("approved", "A1", 1476)
    assert case.reauthorization_due == dt.date(2027, 5, 1)  # the policy's 30 days before the end
    case = store.add_event(case.id, "infusion_given", D, {"units": 246}, "ann")
    assert case.units_given == 246 and case.status == "approved"
    with pytest.raises(Conflict):
        store.add_event(case.id, "appealed", D, {}, "ann")  # does not fit an approved case
    data, result = _pair()
    data["patient"]["weight_kg"] = 70
    case = store.correct(case.id, data, result, "bob")
    assert case.referral_version == 2 and case.status == "approved"  # the payer's answer stands
    assert [v.number for v in store.referral_versions(case.id)] == [1, 2]
    assert store.referral(case.id)["patient"]["weight_kg"] == 70
    assert [e.type for e in store.events(case.id)] == ["submitted", "approved", "infusion_given", "corrected"]
    assert {a.action for a in store.audit_log()} >= {"case.create", "case.event.approved", "case.referral.update"}


def test_stale_version_loses(store: Store) -> None:
    case = store.add_cases([_pair()], "ann")[0]
    store.add_event(case.id, "submitted", D, {}, "ann", version=1)
    with pytest.raises(Conflict, match="changed since you read it"):
        store.add_event(case.id, "closed", D, {}, "bob", version=1)
    assert store.get(case.id).status == "submitted"


def test_concurrent_events_one_wins(store: Store) -> None:
    case = store.add_cases([_pair()], "ann")[0]
    store.add_event(case.id, "submitted", D, {}, "ann")
    outcomes: list[str] = []

    def decide(etype: str, fields: dict) -> None:
        try:
            store.add_event(case.id, etype, D, fields, "x", version=2)
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=decide, args=("denied", {"reason": "r"})),
               threading.Thread(target=decide, args=("pended", {"requested": "notes"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    assert len(store.events(case.id)) == 2


def test_upload_is_one_transaction(store: Store) -> None:
    good = _pair()
    bad = ({**good[0], "referral_id": None}, good[1])  # violates NOT NULL half-way through
    before = store.list_cases()[1]
    with pytest.raises(Exception):
        store.add_cases([good, good, bad], "ann")
    assert store.list_cases()[1] == before


def test_filters_counts_and_migrate_twice(store: Store) -> None:
    store.add_cases([_pair(), _pair("pm-undated-steroid-trial.yaml"), _pair("ibm-not-covered.yaml")], "ann")
    counts = store.counts()
    assert counts["ready"] >= 1 and counts["missing_documentation"] >= 1 and counts["not_eligible"] >= 1
    cases, total = store.list_cases(status="missing_documentation")
    assert total == len(cases) >= 1 and all(c.status == "missing_documentation" for c in cases)
    migrate(store.engine)  # a second serve process starting: no-op, same secret
    assert store.setting("session_secret")


def test_two_processes_share_one_store(store: Store) -> None:
    """A second engine on the same database (as a second `serve` would open): its migration run
    waits for or skips the first, and it sees and guards the same cases."""
    from priorauth.service.store import make_engine

    other = Store(make_engine(store.engine.url.render_as_string(hide_password=False)))
    try:
        threads = [threading.Thread(target=migrate, args=(st.engine,)) for st in (store, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        case = store.add_cases([_pair()], "ann")[0]
        assert other.get(case.id).status == "ready"
        other.add_event(case.id, "submitted", D, {}, "bob", version=1)
        with pytest.raises(Conflict):
            store.add_event(case.id, "submitted", D, {}, "ann", version=1)
        assert store.setting("session_secret") == other.setting("session_secret")
    finally:
        other.close()


def test_worklist_counts_follow_changes_in_another_process(store: Store) -> None:
    """The worklist keeps counts and payers until the `cases` counter moves: a change made
    through a second engine (another worker) shows at once in the first one's worklist."""
    from priorauth.service.store import make_engine

    store.add_cases([_pair(), _pair("ibm-not-covered.yaml")], "ann")
    first = store.worklist(status="ready")
    other = Store(make_engine(store.engine.url.render_as_string(hide_password=False)))
    try:
        case = other.add_cases([_pair()], "bob")[0]
        second = store.worklist(status="ready")
        assert second["total"] == first["total"] + 1 == second["counts"]["ready"]
        other.add_event(case.id, "submitted", D, {}, "bob")
        third = store.worklist(status="submitted")
        assert third["counts"]["submitted"] == (first["counts"].get("submitted", 0) + 1)
        assert [r.id for r in third["rows"]][0] == case.id
        assert store.worklist(payer="no-such-payer")["total"] == 0
    finally:
        other.close()


def test_signin_limit_shared_by_two_processes(store: Store) -> None:
    from priorauth.service.auth import RateLimit
    from priorauth.service.store import make_engine

    other = Store(make_engine(store.engine.url.render_as_string(hide_password=False)))
    try:
        a, b = RateLimit(store, limit=3), RateLimit(other, limit=3)
        key = a.key("ann", "192.0.2.1")
        a.fail(key)
        b.fail(key)
        assert not a.blocked(key)
        b.fail(key)
        assert a.blocked(key) and b.blocked(key)
        a.clear(key)
        assert not b.blocked(key)
    finally:
        other.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_from_the_first_migration(backend: str, tmp_path) -> None:
    """A store made by revision 0001 (the previous head) with a case and a user in it upgrades
    to head at start-up: the case and user stay, the new tables work."""
    from alembic import command
    from alembic.config import Config

    from priorauth.service.store import MIGRATIONS, database_url, make_engine

    from .conftest import pg_url

    url = database_url(tmp_path / "data") if backend == "sqlite" else database_url(database=pg_url())
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(write=True) as conn:
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.exec_driver_sql("INSERT INTO users (name, role, password_hash, active, created_at) "
                                 "VALUES ('ann', 'billing', 'x', true, '2026-01-01 00:00:00')")
            conn.exec_driver_sql(
                "INSERT INTO cases (id, referral_id, patient, payer, therapy, request_type, status, determination, "
                "missing, result, referral_version, units_given, version, created_at, updated_at) VALUES "
                "('c1', 'R1', 'A, B', 'p', 'ivig', 'initial', 'ready', 'meets_criteria', '[]', '{}', 1, 0, 1, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
    migrate(engine)
    st = Store(engine)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0002"
        assert st.get("c1").status == "ready" and st.user_by_name("ann").role == "billing"
        assert st.changes() == 0
        w = st.worklist()
        assert w["total"] == 1 and w["counts"] == {"ready": 1} and w["payers"] == ["p"]
        st.signin_failed("k", dt.datetime(2000, 1, 1))
        assert st.signin_failures("k", dt.datetime(2000, 1, 1)) == 1
        cases, cursor = st.case_page(limit=5)
        assert [c.id for c in cases] == ["c1"] and cursor is None
    finally:
        st.close()


def test_audit_rows_of_concurrent_requests_all_land(store: Store) -> None:
    """Audit rows are committed together (group commit): each is in the database when audit()
    returns, and a row that cannot be written raises in its own caller."""
    threads = [threading.Thread(target=store.audit, args=(f"u{i}", "case.read", "c1")) for i in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    users = {a.user for a in store.audit_log(1000) if a.case_id == "c1"}
    assert users >= {f"u{i}" for i in range(25)}
    bad = threading.Thread(target=lambda: pytest.raises(Exception, store.audit, None, "x"))  # NOT NULL
    good = [threading.Thread(target=store.audit, args=(f"v{i}", "case.read", "c2")) for i in range(5)]
    for t in [bad, *good]:
        t.start()
    for t in [bad, *good]:
        t.join()
    assert {a.user for a in store.audit_log(1000) if a.case_id == "c2"} == {f"v{i}" for i in range(5)}
    with pytest.raises(Exception):
        store.audit(None, "case.read")  # type: ignore[arg-type]
    store.audit("after", "still.works")
    assert store.audit_log(1)[0].user == "after"
