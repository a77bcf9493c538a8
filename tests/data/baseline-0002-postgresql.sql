-- queuectl baseline-0002 (schema as that release made it), made by tests/data/make_baseline.py
-- Replay into an empty schema (search_path set to it).
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
CREATE TABLE jobs (
	id VARCHAR(128) NOT NULL, 
	command TEXT NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_retries INTEGER NOT NULL, 
	priority INTEGER NOT NULL, 
	timeout_s FLOAT, 
	next_run_at FLOAT, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	exit_code INTEGER, 
	last_error TEXT, 
	owner VARCHAR(200), 
	lease_expires_at FLOAT, 
	run INTEGER NOT NULL, 
	pid INTEGER, 
	proc_start INTEGER, 
	host VARCHAR(255), 
	output_tail TEXT, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_jobs_due ON jobs (priority DESC, next_run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX ix_jobs_created ON jobs (created_at);
CREATE INDEX ix_jobs_next ON jobs (next_run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX ix_jobs_state_created ON jobs (state, created_at);
CREATE TABLE attempts (
	job_id VARCHAR(128) NOT NULL, 
	attempt INTEGER NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	exit_code INTEGER, 
	reason VARCHAR(64), 
	error TEXT, 
	owner VARCHAR(200), 
	PRIMARY KEY (job_id, attempt)
);
CREATE TABLE config (
	key VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY (key)
);
CREATE TABLE daemons (
	id VARCHAR(200) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	proc_start INTEGER, 
	started_at FLOAT NOT NULL, 
	heartbeat_at FLOAT NOT NULL, 
	slots INTEGER NOT NULL, 
	active INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE meta (
	key VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY (key)
);
CREATE TABLE IF NOT EXISTS state_count_deltas (state VARCHAR(16) NOT NULL, n BIGINT NOT NULL);
CREATE OR REPLACE FUNCTION queuectl_count_insert() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n) SELECT state, count(*) FROM new_rows GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION queuectl_count_delete() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n) SELECT state, -count(*) FROM old_rows GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION queuectl_count_update() RETURNS trigger AS $$
       BEGIN
         INSERT INTO state_count_deltas (state, n)
         SELECT state, sum(n) FROM (
           SELECT o.state, -1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id WHERE o.state <> w.state
           UNION ALL
           SELECT w.state, 1 AS n FROM old_rows o JOIN new_rows w ON o.id = w.id WHERE o.state <> w.state
         ) d GROUP BY state;
         RETURN NULL;
       END $$ LANGUAGE plpgsql;
INSERT INTO meta (key, value) VALUES ('queue_id', '11de99509ed180b9c7c05ed02ebe2adc');
INSERT INTO meta (key, value) VALUES ('schema_version', '2');
INSERT INTO config (key, value) VALUES ('max-retries', '4');
INSERT INTO daemons (id, host, pid, proc_start, started_at, heartbeat_at, slots, active) VALUES ('old-host:4242:cafe0001', 'old-host', 4242, 123456, 1700000000.0, 1700000030.0, 4, 2);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('canceled-running', 'echo canceled-running', 'canceled', 0, 3, 0, NULL, NULL, 1700000000.0, 1700000003.0, 1700000001.0, 1700000003.0, NULL, 'canceled', NULL, NULL, 1, 2009, 709, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('dlq-retried', 'echo dlq-retried', 'pending', 0, 0, 0, NULL, 1700000004.0, 1700000000.0, 1700000004.0, 1700000001.0, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of dlq-retried
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('exit-dead', 'echo exit-dead', 'dead', 1, 0, 0, NULL, NULL, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 3, 'exit code 3', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of exit-dead
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('exit-ok', 'echo exit-ok', 'completed', 0, 3, 0, NULL, NULL, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 0, NULL, NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of exit-ok
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('killed-lease', 'echo killed-lease', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, NULL, 'killed: its lease was lost', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of killed-lease
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('killed-unknown', 'echo killed-unknown', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, NULL, 'exit status unknown', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of killed-unknown
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('lost-failed', 'echo lost-failed', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, NULL, 'worker lost: daemon old-host:4242:cafe0001 stopped during the attempt', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of lost-failed
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('many-attempts', 'echo many-attempts', 'processing', 3, 5, 9, NULL, 1700003009.0, 1700000000.0, 1700004000.0, 1700004000.0, 1700003001.0, NULL, 'worker lost', 'old-host:4242:cafe0001', 1700004030.0, 4, NULL, NULL, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('never-ran', 'echo never-ran', 'pending', 0, 3, 0, NULL, 1700050000.0, 1700050000.0, 1700000000.0, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('released', 'echo released', 'pending', 0, 3, 0, NULL, 1700000003.0, 1700000000.0, 1700000003.0, 1700000001.0, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('sigkill-dead', 'echo sigkill-dead', 'dead', 1, 0, 0, NULL, NULL, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 137, 'killed by SIGKILL', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of sigkill-dead
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('sigsegv-failed', 'echo sigsegv-failed', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 139, 'killed by SIGSEGV', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of sigsegv-failed
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('spawn-dead', 'echo spawn-dead', 'dead', 1, 0, 0, NULL, NULL, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, NULL, 'could not start /bin/sh: [Errno 24] Too many open files', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of spawn-dead
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('stray', 'echo stray', 'pending', 0, 3, 0, NULL, 1700000000.0, 1700000000.0, 1700000003.0, 1700000001.0, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('timeout-dead', 'echo timeout-dead', 'dead', 1, 0, 0, NULL, NULL, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, NULL, 'timed out after 5s', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of timeout-dead
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('timeout-exited', 'echo timeout-exited', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 1, 'timed out after 5s', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of timeout-exited
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('unknown-signal-failed', 'echo unknown-signal-failed', 'failed', 1, 3, 0, NULL, 1700000004.0, 1700000000.0, 1700000002.0, 1700000001.0, 1700000002.0, 205, 'killed by signal 77', NULL, NULL, 1, NULL, NULL, 'old-host', 'tail of unknown-signal-failed
');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('canceled-running', 1, 1700000001.0, 1700000003.0, NULL, 'canceled', 'canceled while running', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('dlq-retried', 1, 1700000001.0, 1700000002.0, 2, 'exit', 'exit code 2', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('exit-dead', 1, 1700000001.0, 1700000002.0, 3, 'exit', 'exit code 3', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('exit-ok', 1, 1700000001.0, 1700000002.0, 0, 'exit', NULL, 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('killed-lease', 1, 1700000001.0, 1700000002.0, NULL, 'killed', 'killed: its lease was lost', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('killed-unknown', 1, 1700000001.0, 1700000002.0, NULL, 'killed', 'exit status unknown', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('lost-failed', 1, 1700000001.0, 1700000002.0, NULL, 'worker lost', 'worker lost: daemon old-host:4242:cafe0001 stopped during the attempt', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('many-attempts', 2, 1700002000.0, 1700002001.0, 1, 'exit', 'exit code 1', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('many-attempts', 1, 1700000001.0, 1700000002.0, NULL, 'timeout', 'timed out after 5s', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('many-attempts', 4, 1700004000.0, NULL, NULL, NULL, NULL, 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('many-attempts', 3, 1700003000.0, 1700003001.0, NULL, 'worker lost', 'worker lost', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('released', 1, 1700000001.0, 1700000003.0, NULL, 'requeued', 'stopped by `worker stop --now`; not counted', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('sigkill-dead', 1, 1700000001.0, 1700000002.0, 137, 'killed', 'killed by SIGKILL', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('sigsegv-failed', 1, 1700000001.0, 1700000002.0, 139, 'killed', 'killed by SIGSEGV', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('spawn-dead', 1, 1700000001.0, 1700000002.0, NULL, 'spawn failed', 'could not start /bin/sh: [Errno 24] Too many open files', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('stray', 1, 1700000001.0, 1700000003.0, NULL, 'requeued', 'never started here: this daemon does not run it (e.g. the answer to its claim was lost); not counted', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('timeout-dead', 1, 1700000001.0, 1700000002.0, NULL, 'timeout', 'timed out after 5s', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('timeout-exited', 1, 1700000001.0, 1700000002.0, 1, 'timeout', 'timed out after 5s', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('unknown-signal-failed', 1, 1700000001.0, 1700000002.0, 205, 'killed', 'killed by signal 77', 'old-host:4242:cafe0001');
INSERT INTO state_count_deltas (state, n) VALUES ('canceled', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('completed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', -16);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 16);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO alembic_version (version_num) VALUES ('0002');
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_insert();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_delete();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_update();
