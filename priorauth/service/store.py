"""The case store: engine set-up, migrations at start-up, and the few operations routes need.

SQLite (a file under the data folder, WAL) by default, PostgreSQL by URL. Several processes on
one PostgreSQL are safe: migrations run under an advisory lock, and every change of a case
locks its row (`SELECT ... FOR UPDATE`) and checks its `version` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

from alembic import command
from alembic.config import Config
from sqlalchemy import and_, bindparam, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, sessionmaker

from .models import ApiToken, Audit, Case, Counter, Event, ReferralVersion, Setting, SigninFailure, User, utcnow
from .workflow import FROM_DETERMINATION, OPEN, PRE_SUBMISSION, TRANSITIONS, lead_days

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x5072696F  # any constant shared by every serve process
ROLES = ("physician", "billing", "admin")
USER_TTL = 5.0  # seconds a process keeps a signed-in user's name and role (a change shows within it)


class Conflict(Exception):
    """The case changed since the caller read it, or the event does not fit its status (409)."""


class NotFound(Exception):
    pass


def database_url(data: Optional[str | Path] = None, database: Optional[str] = None) -> str:
    """The SQLAlchemy URL: `database` as given (postgresql:// means psycopg 3), else SQLite in `data`."""
    if database:
        if database.startswith("postgresql://") or database.startswith("postgres://"):
            return "postgresql+psycopg://" + database.split("://", 1)[1]
        return database
    folder = Path(data or "priorauth-data")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    db = folder / "cases.sqlite3"
    # create the file 0600 before SQLite does (its -wal and -shm files copy the db's mode)
    os.close(os.open(db, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(db, 0o600)
    return f"sqlite:///{db}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=20, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # noqa: ANN001 - DB-API connection
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # pysqlite's own BEGIN handling defers the write lock; take it at BEGIN so two writers
        # queue on busy_timeout instead of failing half-way (SQLAlchemy's documented recipe)
        @event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """`alembic upgrade head`, one process at a time, then the shared settings."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(write=True) as conn:
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if conn.execute(select(Setting.value).where(Setting.key == "session_secret")).first() is None:
                conn.execute(Setting.__table__.insert().values(key="session_secret",
                                                               value=secrets.token_urlsafe(48)))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Who:
    id: int
    name: str
    role: str


class Store:
    """The operations the routes use; each is one transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.sqlite = engine.dialect.name == "sqlite"
        # (name, ...) -> (the `cases` counter it was read at, value): counts, payers, totals
        self._cache: dict[tuple, tuple[int, Any]] = {}
        self._audit_writer = _AuditWriter(engine)
        self._users: dict[int, tuple[float, Optional[Who]]] = {}

    @classmethod
    def open(cls, data: Optional[str | Path] = None, database: Optional[str] = None) -> "Store":
        engine = make_engine(database_url(data, database))
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self._audit_writer.stop()
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    # ----------------------------------------------------------------- settings, users, tokens

    def setting(self, key: str) -> Optional[str]:
        with self.session() as s:
            return s.scalar(select(Setting.value).where(Setting.key == key))

    def add_user(self, name: str, role: str, password_hash: str) -> Who:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        with self._begin() as s:
            user = User(name=name, role=role, password_hash=password_hash, active=True)
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"user {name} exists") from None
            return Who(user.id, user.name, user.role)

    def user_by_name(self, name: str) -> Optional[User]:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name, User.active.is_(True)))

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def new_token(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._begin() as s:
            uid = s.scalar(select(User.id).where(User.name == name))
            if uid is None:
                raise NotFound(f"no user {name}")
            s.add(ApiToken(user_id=uid, token_hash=hash_token(token)))
        return token

    def user_by_token(self, token: str) -> Optional[Who]:
        with self.session() as s:
            row = s.execute(select(User.id, User.name, User.role).join(ApiToken, ApiToken.user_id == User.id)
                            .where(ApiToken.token_hash == hash_token(token), User.active.is_(True))).first()
            return Who(*row) if row else None

    def user_by_id(self, uid: int) -> Optional[Who]:
        """Every page asks: Core, and kept for USER_TTL seconds per process."""
        hit = self._users.get(uid)
        now = time.monotonic()
        if hit is not None and now - hit[0] < USER_TTL:
            return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(_USER_BY_ID, {"uid": uid}).first()
        who = Who(*row) if row else None
        if len(self._users) > 1000:
            self._users.clear()
        self._users[uid] = (now, who)
        return who

    # ----------------------------------------------------------------- sign-in rate limit

    def signin_failures(self, key: str, since: dt.datetime) -> int:
        """Failed sign-ins of `key` (a hash of user name and address) since `since`, by any process."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count(SigninFailure.id))
                                .where(SigninFailure.key == key, SigninFailure.at >= since)).scalar() or 0

    def signin_failed(self, key: str, forget_before: dt.datetime) -> None:
        """Record a failure; failures older than the window (of any key) go."""
        with self._begin() as s:
            s.execute(delete(SigninFailure).where(SigninFailure.at < forget_before))
            s.add(SigninFailure(key=key, at=utcnow()))

    def signin_clear(self, key: str) -> None:
        with self._begin() as s:
            s.execute(delete(SigninFailure).where(SigninFailure.key == key))

    # ----------------------------------------------------------------- audit

    def audit(self, user: str, action: str, case_id: Optional[str] = None) -> None:
        """One audit row, committed before this returns (so before the answer goes out). Every
        page read writes one: the rows of concurrent requests go to the database together, one
        transaction for all of them (group commit, `_AuditWriter`), instead of one write
        transaction each queueing for the database's write lock."""
        self._audit_writer.write({"at": utcnow(), "user": user, "action": action, "case_id": case_id})

    def audit_log(self, limit: int = 500) -> list[Audit]:
        with self.session() as s:
            return list(s.scalars(select(Audit).order_by(Audit.id.desc()).limit(limit)))

    # ----------------------------------------------------------------- cases

    def add_cases(self, items: Iterable[tuple[dict[str, Any], dict[str, Any]]], user: str) -> list[Case]:
        """New cases from (referral data, determination JSON) pairs, all in one transaction."""
        with self._begin() as s:
            cases = []
            for data, result in items:
                case = Case(id=secrets.token_urlsafe(16), version=1, referral_version=1, units_given=0,
                            status=FROM_DETERMINATION[result["determination"]], **_case_fields(data, result))
                s.add(case)
                s.flush()  # the case row before its referral version (foreign key)
                s.add(ReferralVersion(case_id=case.id, number=1, data=json.dumps(data),
                                      determination=result["determination"], created_by=user))
                s.add(Audit(user=user, action="case.create", case_id=case.id))
                cases.append(case)
            if cases:
                _bump_counter(s)
            return cases

    def get(self, case_id: str) -> Case:
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None:
                raise NotFound(case_id)
            return case

    def events(self, case_id: str) -> list[Event]:
        with self.session() as s:
            return list(s.scalars(select(Event).where(Event.case_id == case_id).order_by(Event.id)))

    def referral_versions(self, case_id: str) -> list[ReferralVersion]:
        with self.session() as s:
            return list(s.scalars(select(ReferralVersion).where(ReferralVersion.case_id == case_id)
                                  .order_by(ReferralVersion.number)))

    def referral(self, case_id: str) -> dict[str, Any]:
        with self.session() as s:
            data = s.scalar(select(ReferralVersion.data).where(ReferralVersion.case_id == case_id)
                            .order_by(ReferralVersion.number.desc()).limit(1))
            if data is None:
                raise NotFound(case_id)
            return json.loads(data)

    def list_cases(self, *, status: Optional[str] = None, payer: Optional[str] = None,
                   due_before: Optional[dt.date] = None, due_after: Optional[dt.date] = None,
                   open_only: bool = False, sort: str = "updated", descending: bool = True,
                   limit: Optional[int] = None, offset: int = 0,
                   with_result: bool = True) -> tuple[list[Case], int]:
        """(one page of cases, how many match in all). `with_result=False` leaves out the
        determination JSON (~6 KB a case), which a worklist page does not show."""
        conditions = _conditions(status, payer, due_before, due_after, open_only)
        q = select(Case).where(*conditions)
        if not with_result:
            q = q.options(defer(Case.result))
        column = _SORTS.get(sort, Case.updated_at)
        order = (column.desc(), Case.id.desc()) if descending else (column.asc(), Case.id.asc())
        with self.session() as s:
            total = s.scalar(select(func.count(Case.id)).where(*conditions))
            q = q.order_by(*order).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q)), total or 0

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            return dict(s.execute(select(Case.status, func.count()).group_by(Case.status)).all())

    def payers(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Case.payer).distinct().order_by(Case.payer)))

    def _locked(self, s: Session, case_id: str, version: Optional[int]) -> Case:
        case = s.scalars(select(Case).where(Case.id == case_id).with_for_update()).first()
        if case is None:
            raise NotFound(case_id)
        if version is not None and case.version != version:
            raise Conflict(f"the case changed since you read it (version {version}, now {case.version}): "
                           "reload it and try again")
        return case

    def _bump(self, s: Session, case: Case, values: dict[str, Any]) -> None:
        # the version check again in the UPDATE itself: safe even where FOR UPDATE is a no-op
        values = {**values, "version": case.version + 1, "updated_at": utcnow()}
        done = s.execute(update(Case).where(Case.id == case.id, Case.version == case.version)
                         .values(**values).execution_options(synchronize_session=False))
        if done.rowcount != 1:
            raise Conflict("the case changed since you read it: reload it and try again")
        _bump_counter(s)

    # ----------------------------------------------------------------- pages

    def changes(self, conn=None) -> int:  # noqa: ANN001
        """The `cases` counter: it goes up with every change of any case, in any process."""
        if conn is None:
            with self.engine.connect() as conn:
                return self.changes(conn)
        return conn.execute(_CHANGES).scalar() or 0

    def _cached(self, key: tuple, generation: int, compute):  # noqa: ANN001
        hit = self._cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        value = compute()
        if len(self._cache) > 512:
            self._cache.clear()
        self._cache[key] = (generation, value)
        return value

    def worklist(self, *, status: Optional[str] = None, payer: Optional[str] = None,
                 due_before: Optional[dt.date] = None, sort: str = "updated", descending: bool = True,
                 limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One worklist page from the stored columns only (never the determination JSON), in one
        read transaction: rows, how many match, counts per status and the payers. The counts,
        payers and totals are kept until the `cases` counter moves."""
        conditions = _conditions(status, payer, due_before, None, False)
        with self.engine.connect() as conn:
            gen = self.changes(conn)
            counts = self._cached(("counts",), gen, lambda: dict(conn.execute(
                select(Case.status, func.count()).group_by(Case.status)).all()))
            payers = self._cached(("payers",), gen, lambda: list(conn.execute(
                select(Case.payer).distinct().order_by(Case.payer)).scalars()))
            if payer is None and due_before is None:
                total = counts.get(status, 0) if status else sum(counts.values())
            else:
                total = self._cached(("total", status, payer, due_before), gen, lambda: conn.execute(
                    select(func.count(Case.id)).where(*conditions)).scalar() or 0)
            values = {"status": status, "payer": payer, "due_before": due_before, "limit": limit, "offset": offset}
            rows = conn.execute(_worklist_query(bool(status), bool(payer), bool(due_before), sort, descending),
                                values).all()
        return {"rows": rows, "total": total, "counts": counts, "payers": payers}

    def case_view(self, case_id: str):  # noqa: ANN201 - rows with the attributes of Case, Event, ReferralVersion
        """A case with its events and referral versions (not their data), in one read transaction;
        Core rows, not ORM objects (a case page is read far more often than it is changed)."""
        with self.engine.connect() as conn:
            case = conn.execute(_CASE_ROW, {"cid": case_id}).first()
            if case is None:
                raise NotFound(case_id)
            events = conn.execute(_CASE_EVENTS, {"cid": case_id}).all()
            versions = conn.execute(_CASE_VERSIONS, {"cid": case_id}).all()
            return case, events, versions

    def case_page(self, *, status: Optional[str] = None, payer: Optional[str] = None,
                  due_before: Optional[dt.date] = None, limit: int = 50,
                  after: Optional[tuple[dt.datetime, str]] = None) -> tuple[list[Case], Optional[tuple[dt.datetime, str]]]:
        """The API's list: oldest first by (created_at, id), `limit` after the cursor `after`;
        (cases without the determination JSON, the cursor of the next page or None). A cursor
        stays right while cases are added or changed: new cases come last."""
        conditions = _conditions(status, payer, due_before, None, False)
        if after is not None:
            conditions.append(or_(Case.created_at > after[0], and_(Case.created_at == after[0], Case.id > after[1])))
        with self.session() as s:
            cases = list(s.scalars(select(Case).options(defer(Case.result)).where(*conditions)
                                   .order_by(Case.created_at, Case.id).limit(limit + 1)))
        more = len(cases) > limit
        cases = cases[:limit]
        return cases, ((cases[-1].created_at, cases[-1].id) if more else None)

    def add_event(self, case_id: str, etype: str, date: dt.date, fields: dict[str, Any], user: str,
                  version: Optional[int] = None) -> Case:
        allowed, to = TRANSITIONS[etype]
        with self._begin() as s:
            case = self._locked(s, case_id, version)
            if case.status not in allowed:
                raise Conflict(f"a {etype} event does not fit a case that is {case.status}")
            values: dict[str, Any] = {"status": to or case.status}
            if etype == "approved":
                end = dt.date.fromisoformat(fields["end_date"])
                values.update(auth_number=fields["authorization_number"], approved_units=fields["approved_units"],
                              auth_start=dt.date.fromisoformat(fields["start_date"]), auth_end=end,
                              reauthorization_due=end - dt.timedelta(days=lead_days(json.loads(case.result))),
                              units_given=0)
            elif etype == "infusion_given":
                values["units_given"] = case.units_given + fields["units"]
            s.add(Event(case_id=case.id, type=etype, date=date, data=json.dumps(fields),
                        from_status=case.status, to_status=values["status"], created_by=user))
            self._bump(s, case, values)
            s.add(Audit(user=user, action=f"case.event.{etype}", case_id=case.id))
        return self.get(case_id)

    def correct(self, case_id: str, data: dict[str, Any], result: dict[str, Any], user: str,
                version: Optional[int] = None) -> Case:
        """A corrected referral: a new referral version; the status follows the new determination
        until the case was submitted, after which the payer's answer decides it."""
        with self._begin() as s:
            case = self._locked(s, case_id, version)
            number = case.referral_version + 1
            s.add(ReferralVersion(case_id=case.id, number=number, data=json.dumps(data),
                                  determination=result["determination"], created_by=user))
            values = {**_case_fields(data, result), "referral_version": number}
            if case.status in PRE_SUBMISSION:
                values["status"] = FROM_DETERMINATION[result["determination"]]
            s.add(Event(case_id=case.id, type="corrected", date=dt.date.today(),
                        data=json.dumps({"referral_version": number, "determination": result["determination"]}),
                        from_status=case.status, to_status=values.get("status", case.status), created_by=user))
            self._bump(s, case, values)
            s.add(Audit(user=user, action="case.referral.update", case_id=case.id))
        return self.get(case_id)

    def _begin(self) -> "_Tx":
        return _Tx(self.engine)


class _AuditWriter:
    """Group commit of audit rows: a caller queues its row and waits; one thread writes every
    row queued so far in one transaction, then wakes their callers (or hands them the error).
    A row is in the database when `write` returns, as with a transaction of its own."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cond = threading.Condition()
        self._queue: list[tuple[dict[str, Any], list]] = []
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def write(self, row: dict[str, Any], timeout: float = 60.0) -> None:
        done: list = []  # [None] once written, [exception] if the batch failed
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            self._queue.append((row, done))
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: done, timeout):
                raise TimeoutError("the audit log could not be written")
        if done[0] is not None:
            raise done[0]

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopped)
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            try:
                self._insert([row for row, _ in batch])
                outcomes: list[Optional[BaseException]] = [None] * len(batch)
            except Exception:  # noqa: BLE001 - one bad row must not fail the others: one by one
                outcomes = [self._insert_one(row) for row, _ in batch]
            with self._cond:
                for (_, done), outcome in zip(batch, outcomes):
                    done.append(outcome)
                self._cond.notify_all()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.connect().execution_options(write=True) as conn:
            with conn.begin():
                conn.execute(insert(Audit.__table__), rows)

    def _insert_one(self, row: dict[str, Any]) -> Optional[BaseException]:
        try:
            self._insert([row])
            return None
        except Exception as exc:  # noqa: BLE001 - handed to that row's caller
            return exc

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)


class _Tx:
    """A write transaction (BEGIN IMMEDIATE on SQLite): commits on success, rolls back on error."""

    def __init__(self, engine: Engine):
        self.conn = engine.connect().execution_options(write=True)
        self.s = Session(bind=self.conn, expire_on_commit=False)

    def __enter__(self) -> Session:
        return self.s

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            if exc_type is None:
                self.s.commit()
            else:
                self.s.rollback()
        finally:
            self.s.close()
            self.conn.close()


def _case_fields(data: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    patient = data.get("patient") or {}
    request = data.get("request") or {}
    auth = result.get("authorization") or {}
    due = auth.get("reauthorization_due")
    return {"referral_id": data["referral_id"], "payer": (data.get("coverage") or {}).get("payer", ""),
            "patient": f"{patient.get('family_name', '')}, {patient.get('given_name', '')}",
            "therapy": request.get("therapy", ""), "request_type": request.get("request_type", "initial"),
            "determination": result["determination"], "missing": json.dumps(result.get("missing") or []),
            "result": json.dumps(result), "reauthorization_due": dt.date.fromisoformat(due) if due else None}


_USER_BY_ID = select(User.id, User.name, User.role).where(User.id == bindparam("uid"), User.active.is_(True))
_CHANGES = select(Counter.value).where(Counter.name == "cases")
# a case page's three reads, built once: building a select costs more than running it
_CASE_ROW = select(Case.__table__).where(Case.id == bindparam("cid"))
_CASE_EVENTS = select(Event.__table__).where(Event.case_id == bindparam("cid")).order_by(Event.id)
_CASE_VERSIONS = (select(ReferralVersion.number, ReferralVersion.determination, ReferralVersion.created_by,
                         ReferralVersion.created_at)
                  .where(ReferralVersion.case_id == bindparam("cid")).order_by(ReferralVersion.number))
_SORTS = {"updated": Case.updated_at, "status": Case.status, "payer": Case.payer, "due": Case.reauthorization_due,
          "patient": Case.patient, "referral": Case.referral_id}
# what a worklist row shows: stored columns only
_WORKLIST_COLUMNS = (Case.id, Case.patient, Case.referral_id, Case.payer, Case.status, Case.missing,
                     Case.reauthorization_due)


@lru_cache(maxsize=128)  # 2^3 filter shapes x sorts x 2 orders
def _worklist_query(status: bool, payer: bool, due_before: bool, sort: str, descending: bool):  # noqa: ANN202
    """The worklist's page query for one shape of filter and order, built once (its values are
    bound per request): building a select costs more than SQLite takes to run it."""
    conditions = [c for on, c in ((status, Case.status == bindparam("status")),
                                  (payer, Case.payer == bindparam("payer")),
                                  (due_before, Case.reauthorization_due <= bindparam("due_before"))) if on]
    column = _SORTS.get(sort, Case.updated_at)
    order = (column.desc(), Case.id.desc()) if descending else (column.asc(), Case.id.asc())
    return (select(*_WORKLIST_COLUMNS).where(*conditions).order_by(*order)
            .limit(bindparam("limit")).offset(bindparam("offset")))


def _conditions(status, payer, due_before, due_after, open_only) -> list:  # noqa: ANN001
    conditions = []
    if status:
        conditions.append(Case.status == status)
    if payer:
        conditions.append(Case.payer == payer)
    if due_before:
        conditions.append(Case.reauthorization_due <= due_before)
    if due_after:
        conditions.append(Case.reauthorization_due >= due_after)
    if open_only:
        conditions.append(Case.status.in_(OPEN))
    return conditions


def _bump_counter(s: Session) -> None:
    s.execute(update(Counter).where(Counter.name == "cases").values(value=Counter.value + 1))
