-- Flow control: what every process consults before it claims work.

-- Paused namespaces: no process claims their steps (their messages stay queued) until resumed.
-- Each engine reads this table once per poll interval.
CREATE TABLE tasker.paused_namespaces (
    namespace  text PRIMARY KEY REFERENCES tasker.task_namespaces (name) ON DELETE CASCADE,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    actor      text,
    reason     text
);

-- Paused templates (every version of namespace/name): their steps are not claimed; a message
-- read meanwhile waits (tasker.flow_waiters) and is woken by tasker.resume_template.
CREATE TABLE tasker.paused_templates (
    namespace  text NOT NULL REFERENCES tasker.task_namespaces (name) ON DELETE CASCADE,
    name       text NOT NULL,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    actor      text,
    reason     text,
    PRIMARY KEY (namespace, name)
);

-- A slot per step in progress under a concurrency limit, held until its outcome is applied
-- (tasker.free_slots) or its claim expires (a crashed holder): `expires_at` is the claim's.
CREATE TABLE tasker.concurrency_slots (
    step_uuid   uuid PRIMARY KEY,
    key         text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX concurrency_slots_key_idx ON tasker.concurrency_slots (key, expires_at);

-- Starts under a rate limit, per key: a sliding log (no window of `per` seconds ever holds
-- more than `limit` starts), one row per admission of `n` starts at once; rows older than the
-- window are deleted as the key is used, and tasker.rate_keys keeps each key's count of the
-- starts left, so an admission reads one row instead of counting the window.
CREATE TABLE tasker.rate_starts (
    key         text NOT NULL,
    started_at  timestamptz NOT NULL,
    n           integer NOT NULL
);
CREATE INDEX rate_starts_key_idx ON tasker.rate_starts (key, started_at);
CREATE TABLE tasker.rate_keys (
    key   text PRIMARY KEY,
    used  integer NOT NULL
);

-- Messages held back by a concurrency limit or a paused template, by the key that holds them:
-- freeing a slot (or resuming the template) makes the oldest visible again at once. Each is
-- also hidden only until the held slots expire (or a minute for a pause), so none waits on a
-- wake-up alone.
CREATE TABLE tasker.flow_waiters (
    step_uuid  uuid PRIMARY KEY,
    key        text NOT NULL,
    queue      text NOT NULL,
    namespace  text NOT NULL,
    msg_id     bigint NOT NULL,
    since      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX flow_waiters_key_idx ON tasker.flow_waiters (key, since);
-- Waking removes waiters by message (the callers plan without sequential scans).
CREATE INDEX flow_waiters_message_idx ON tasker.flow_waiters (queue, msg_id);

-- Every change of a flow key's state is made holding that key's transaction lock (released at
-- commit; no session state, so it works through a transaction-mode pooler), taken in key
-- order after the rows a caller locks: claims and outcomes of one key are serialized, so a
-- slot freed and a waiter recorded at once cannot miss each other.
CREATE FUNCTION tasker.lock_flow_keys(p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    FOR k IN SELECT DISTINCT x FROM unnest(p_keys) AS x WHERE x IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('tasker.flow:' || k, 0));
    END LOOP;
END $$;

-- Admit up to p_n starts for p_key under a rate limit of p_limit per p_per seconds (the caller
-- holds the key's lock): the admitted ones are recorded now; for each one refused, the time
-- it may start — the j-th refused when the j-th oldest start in the window leaves it.
CREATE FUNCTION tasker.rate_admit(p_key text, p_limit integer, p_per double precision, p_n integer)
RETURNS TABLE (admitted integer, retry_at timestamptz[])
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    at timestamptz := clock_timestamp();
    window_start timestamptz := clock_timestamp() - make_interval(secs => p_per);
    gone integer;
    used integer;
    ok integer;
BEGIN
    WITH old AS (DELETE FROM tasker.rate_starts r WHERE r.key = p_key AND r.started_at <= window_start
                 RETURNING r.n)
    SELECT coalesce(sum(old.n), 0)::integer INTO gone FROM old;
    INSERT INTO tasker.rate_keys AS k (key, used) VALUES (p_key, 0)
    ON CONFLICT (key) DO UPDATE SET used = greatest(k.used - gone, 0)
    RETURNING k.used INTO used;
    ok := least(greatest(p_limit - used, 0), greatest(p_n, 0));
    IF ok > 0 THEN
        INSERT INTO tasker.rate_starts (key, started_at, n) VALUES (p_key, at, ok);
        UPDATE tasker.rate_keys k SET used = k.used + ok WHERE k.key = p_key;
    END IF;
    IF ok >= p_n THEN
        RETURN QUERY SELECT ok, '{}'::timestamptz[];
        RETURN;
    END IF;
    -- The j-th refused start may happen when the j-th oldest start in the window leaves it.
    RETURN QUERY
    WITH cum AS (SELECT r.started_at, sum(r.n) OVER (ORDER BY r.started_at) AS upto
                   FROM tasker.rate_starts r WHERE r.key = p_key AND r.started_at > window_start)
    SELECT ok, coalesce(array_agg(t.at + make_interval(secs => p_per) ORDER BY t.j), '{}')
      FROM generate_series(1, p_n - ok) AS g(j)
      CROSS JOIN LATERAL (SELECT g.j, c.started_at AS at FROM cum c WHERE c.upto >= g.j
                           ORDER BY c.started_at LIMIT 1) t;
END $$;

-- TaskerCore::RateLimit.acquire: one start for p_key now, or the seconds until one may start.
CREATE FUNCTION tasker.acquire_rate(p_key text, p_limit integer, p_per double precision)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM tasker.lock_flow_keys(ARRAY['r:' || p_key]);
    SELECT * INTO r FROM tasker.rate_admit('r:' || p_key, p_limit, p_per, 1);
    IF r.admitted = 1 THEN
        RETURN 0;
    END IF;
    RETURN greatest(extract(epoch FROM r.retry_at[1] - clock_timestamp())::double precision, 0.001);
END $$;

-- Which of a read's claims (p_steps with their messages p_ids, in read order: those with a
-- flow limit, or all while a template is paused) may start now. Under each key's lock:
-- a step of a paused template waits (woken by tasker.resume_template); a step over its
-- concurrency limit waits for a slot (woken by tasker.free_slots, or when the held slots'
-- claims expire); a step over its rate limit is hidden until a start is allowed. Admitted
-- steps get their slot (expiring with the claim claim_steps gives them) and their start.
-- The slots of p_finishing (steps whose handler already returned in the claiming process,
-- their outcome on its way) are not counted: no handler of theirs runs any more.
-- No attempt is spent on a step held back. Rows: every step, admitted or held until when, why.
CREATE FUNCTION tasker.admit_flow(p_queue text, p_ids bigint[], p_steps uuid[], p_grace integer,
                                  p_finishing uuid[] DEFAULT NULL)
RETURNS TABLE (step_uuid uuid, admitted boolean, hold_until timestamptz, reason text)
LANGUAGE plpgsql
-- A key's lock is held for a claim's or an outcome's transaction only: wait for it (however
-- short the queue pool's lock_timeout is).
SET lock_timeout = '30s'
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_steps);
    f_flow jsonb[];
    f_timeout integer[];
    f_ns text[];
    f_pns text[];
    f_pname text[];
    ok boolean[];
    hold timestamptz[];
    why text[];
    wait_key text[];
    k text;
    lim integer;
    per double precision;
    used integer;
    soonest timestamptz;
    free integer;
    idx integer[];
    i integer;
    j integer;
    r record;
BEGIN
    IF coalesce(n, 0) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(ws.flow ORDER BY x.k), array_agg(ws.timeout_seconds ORDER BY x.k),
           array_agg(tk.namespace ORDER BY x.k), array_agg(pt.namespace ORDER BY x.k),
           array_agg(pt.name ORDER BY x.k)
      INTO f_flow, f_timeout, f_ns, f_pns, f_pname
      FROM unnest(p_steps) WITH ORDINALITY AS x(s, k)
      JOIN tasker.workflow_steps ws ON ws.step_uuid = x.s
      JOIN tasker.tasks tk ON tk.task_uuid = ws.task_uuid
      LEFT JOIN tasker.named_tasks nt ON nt.named_task_id = tk.named_task_id
      LEFT JOIN tasker.paused_templates pt ON pt.namespace = nt.namespace AND pt.name = nt.name;
    ok := array_fill(true, ARRAY[n]);
    hold := array_fill(NULL::timestamptz, ARRAY[n]);
    why := array_fill(NULL::text, ARRAY[n]);
    wait_key := array_fill(NULL::text, ARRAY[n]);

    PERFORM tasker.lock_flow_keys(array(
        SELECT 'p:' || f_pns[g] || '/' || f_pname[g] FROM generate_series(1, n) g WHERE f_pname[g] IS NOT NULL
        UNION ALL SELECT 'c:' || (f_flow[g]->'concurrency'->>'key') FROM generate_series(1, n) g
        UNION ALL SELECT 'r:' || (f_flow[g]->'rate'->>'key') FROM generate_series(1, n) g));

    -- Paused templates, checked again under their lock (a resume may have committed since).
    FOR i IN 1..n LOOP
        IF f_pname[i] IS NOT NULL AND EXISTS (SELECT 1 FROM tasker.paused_templates pt
                                               WHERE pt.namespace = f_pns[i] AND pt.name = f_pname[i]) THEN
            ok[i] := false;
            hold[i] := clock_timestamp() + interval '60 seconds';
            why[i] := 'template ' || f_pns[i] || '/' || f_pname[i] || ' is paused';
            wait_key[i] := 'p:' || f_pns[i] || '/' || f_pname[i];
        END IF;
    END LOOP;

    -- Concurrency: the first (limit - slots held) claims of each key go ahead.
    FOR k IN SELECT DISTINCT f_flow[g]->'concurrency'->>'key' FROM generate_series(1, n) g
              WHERE ok[g] AND f_flow[g]->'concurrency' IS NOT NULL ORDER BY 1 LOOP
        idx := array(SELECT g FROM generate_series(1, n) g
                      WHERE ok[g] AND f_flow[g]->'concurrency'->>'key' = k ORDER BY g);
        lim := (f_flow[idx[1]]->'concurrency'->>'limit')::integer;
        DELETE FROM tasker.concurrency_slots cs WHERE cs.key = k AND cs.expires_at <= now();
        SELECT count(*), min(cs.expires_at) INTO used, soonest
          FROM tasker.concurrency_slots cs
         WHERE cs.key = k AND NOT (cs.step_uuid = ANY (p_steps))
           AND NOT (cs.step_uuid = ANY (coalesce(p_finishing, '{}')));
        free := greatest(lim - used, 0);
        FOREACH i IN ARRAY idx LOOP
            IF free > 0 THEN
                free := free - 1;
            ELSE
                ok[i] := false;
                hold[i] := greatest(coalesce(soonest, clock_timestamp() + interval '60 seconds'),
                                    clock_timestamp() + interval '1 second');
                why[i] := 'concurrency limit of ' || lim || ' reached for ' || k;
                wait_key[i] := 'c:' || k;
            END IF;
        END LOOP;
    END LOOP;

    -- Rate: of the rest, as many of each key as its window has room for.
    FOR k IN SELECT DISTINCT f_flow[g]->'rate'->>'key' FROM generate_series(1, n) g
              WHERE ok[g] AND f_flow[g]->'rate' IS NOT NULL ORDER BY 1 LOOP
        idx := array(SELECT g FROM generate_series(1, n) g WHERE ok[g] AND f_flow[g]->'rate'->>'key' = k ORDER BY g);
        lim := (f_flow[idx[1]]->'rate'->>'limit')::integer;
        per := (f_flow[idx[1]]->'rate'->>'per')::double precision;
        SELECT * INTO r FROM tasker.rate_admit('r:' || k, lim, per, cardinality(idx));
        FOR j IN (r.admitted + 1)..cardinality(idx) LOOP
            i := idx[j];
            ok[i] := false;
            -- The window holds at least `limit` starts; a refused one beyond them (a limit
            -- lowered meanwhile) waits for the newest to leave.
            hold[i] := coalesce(r.retry_at[j - r.admitted], r.retry_at[cardinality(r.retry_at)],
                                clock_timestamp() + make_interval(secs => per));
            why[i] := 'rate limit of ' || lim || ' per ' || per || ' s reached for ' || k;
        END LOOP;
    END LOOP;

    -- The admitted hold a slot until their claim's expiry (claim_steps computes the same).
    INSERT INTO tasker.concurrency_slots AS cs (step_uuid, key, expires_at)
    SELECT p_steps[g], f_flow[g]->'concurrency'->>'key', now() + make_interval(secs => f_timeout[g] + p_grace)
      FROM generate_series(1, n) g WHERE ok[g] AND f_flow[g]->'concurrency' IS NOT NULL
    ON CONFLICT (step_uuid) DO UPDATE SET key = EXCLUDED.key, expires_at = EXCLUDED.expires_at;
    DELETE FROM tasker.flow_waiters w
     WHERE w.step_uuid = ANY (array(SELECT p_steps[g] FROM generate_series(1, n) g WHERE ok[g]));
    INSERT INTO tasker.flow_waiters AS w (step_uuid, key, queue, namespace, msg_id)
    SELECT p_steps[g], wait_key[g], p_queue, f_ns[g], p_ids[g]
      FROM generate_series(1, n) g WHERE wait_key[g] IS NOT NULL
    ON CONFLICT (step_uuid) DO UPDATE SET key = EXCLUDED.key, queue = EXCLUDED.queue,
                                          namespace = EXCLUDED.namespace, msg_id = EXCLUDED.msg_id;

    RETURN QUERY SELECT p_steps[g], ok[g], hold[g], why[g] FROM generate_series(1, n) g ORDER BY g;
END $$;

-- Make up to p_counts[i] of the oldest messages waiting on p_keys[i] visible now (all of them
-- when NULL), and wake their namespaces' workers — this process's too (the notification is
-- untagged: no process knows of these messages yet); returns how many were woken. The caller
-- holds the keys' locks. A waiter whose message is gone (its step was cancelled or finished
-- meanwhile) is dropped and the next one taken; a message a claim holds right now is that
-- claim's already; a queue that cannot be written (dropped) leaves its waiters to their own
-- hold time.
CREATE FUNCTION tasker.wake_waiters(p_keys text[], p_counts integer[])
RETURNS integer
LANGUAGE plpgsql
-- Called from the step cycle's functions, which plan without sequential scans: whatever this
-- plans must never be costed into JIT compilation (which would cost more than the call).
SET jit = off
AS $$
DECLARE
    i integer;
    want integer;
    round integer;
    q text;
    ns text;
    ids bigint[];
    woken bigint[];
    gone bigint[];
    dropped integer;
    total integer := 0;
BEGIN
    FOR i IN 1..coalesce(cardinality(p_keys), 0) LOOP
        want := p_counts[i];
        FOR round IN 1..5 LOOP
            dropped := 0;
            FOR q, ns, ids IN
                SELECT w.queue, min(w.namespace), array_agg(w.msg_id)
                  FROM (SELECT fw.queue, fw.namespace, fw.msg_id FROM tasker.flow_waiters fw
                         WHERE fw.key = p_keys[i] ORDER BY fw.since LIMIT want) w
                 GROUP BY w.queue ORDER BY w.queue
            LOOP
                BEGIN
                    EXECUTE format('WITH u AS (UPDATE pgmq.%1$I m SET vt = clock_timestamp() WHERE m.msg_id = ANY ($1) '
                                   'AND m.msg_id IN (SELECT msg_id FROM pgmq.%1$I WHERE msg_id = ANY ($1) '
                                   'FOR UPDATE SKIP LOCKED) RETURNING m.msg_id) SELECT array_agg(msg_id) FROM u', 'q_' || q)
                      INTO woken USING ids;
                    EXECUTE format('SELECT array_agg(x) FROM unnest($1) AS x '
                                   'WHERE NOT EXISTS (SELECT 1 FROM pgmq.%I m WHERE m.msg_id = x)', 'q_' || q)
                      INTO gone USING ids;
                EXCEPTION WHEN OTHERS THEN
                    woken := NULL;
                    gone := NULL;
                END;
                DELETE FROM tasker.flow_waiters fw
                 WHERE fw.queue = q AND fw.msg_id = ANY (coalesce(woken, '{}') || coalesce(gone, '{}'));
                IF cardinality(woken) > 0 THEN
                    PERFORM pg_notify('tasker_wakeup', ns);
                    total := total + cardinality(woken);
                    want := want - cardinality(woken);
                END IF;
                dropped := dropped + coalesce(cardinality(gone), 0);
            END LOOP;
            EXIT WHEN dropped = 0 OR want <= 0;
        END LOOP;
    END LOOP;
    RETURN total;
END $$;

-- Free the concurrency slots of steps whose outcome was applied (tasker.apply_step_results)
-- and wake, per key, one waiting message for each slot freed.
CREATE FUNCTION tasker.free_slots(p_steps uuid[]) RETURNS void
LANGUAGE plpgsql
SET lock_timeout = '30s'
SET jit = off
AS $$
DECLARE
    keys text[];
    counts integer[];
BEGIN
    PERFORM tasker.lock_flow_keys(array(
        SELECT 'c:' || cs.key FROM tasker.concurrency_slots cs WHERE cs.step_uuid = ANY (p_steps)));
    WITH gone AS (DELETE FROM tasker.concurrency_slots cs WHERE cs.step_uuid = ANY (p_steps) RETURNING cs.key)
    SELECT array_agg('c:' || g.key ORDER BY g.key), array_agg(g.n ORDER BY g.key) INTO keys, counts
      FROM (SELECT gone.key, count(*)::int AS n FROM gone GROUP BY gone.key) g;
    IF cardinality(keys) > 0 THEN
        PERFORM tasker.wake_waiters(keys, counts);
    END IF;
END $$;

-- Pause a template (every version of it) / resume it, waking the messages it held back.
CREATE FUNCTION tasker.resume_template(p_namespace text, p_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    key text := 'p:' || p_namespace || '/' || p_name;
    found_one boolean;
BEGIN
    PERFORM tasker.lock_flow_keys(ARRAY[key]);
    DELETE FROM tasker.paused_templates pt WHERE pt.namespace = p_namespace AND pt.name = p_name;
    found_one := FOUND;
    PERFORM tasker.wake_waiters(ARRAY[key], ARRAY[NULL::integer]);
    RETURN found_one;
END $$;

-- Cron schedules (declared in a template or the configuration, or created at runtime) and
-- the record of each tick fired. Every worker process evaluates the schedules; a tick fires
-- in the transaction that moves `last_tick` past it from the value that process read (so
-- one process wins), inserts its fire row (one per schedule and tick) and creates the task
-- (whose idempotency key names the tick).
CREATE TABLE tasker.schedules (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    namespace   text NOT NULL,
    task_name   text NOT NULL,
    version     text NOT NULL,
    cron        text NOT NULL,
    timezone    text NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    missed      text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'fire_once')),
    source      text NOT NULL CHECK (source IN ('template', 'config', 'runtime')),
    paused      boolean NOT NULL DEFAULT false,
    -- The newest tick handled (fired, or passed over while missed or paused).
    last_tick   timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasker.schedule_fires (
    schedule   text NOT NULL REFERENCES tasker.schedules (name) ON DELETE CASCADE,
    tick       timestamptz NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('tick', 'missed', 'manual')),
    task_uuid  uuid NOT NULL,
    fired_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);
