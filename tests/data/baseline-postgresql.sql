-- queuectl baseline (schema version 1, before Alembic), made by tests/data/make_baseline.py
-- Replay into an empty schema (search_path set to it).
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
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
INSERT INTO config (key, value) VALUES ('backoff-base', '3');
INSERT INTO config (key, value) VALUES ('job-timeout', '120.5');
INSERT INTO config (key, value) VALUES ('max-retries', '5');
INSERT INTO daemons (id, host, pid, proc_start, started_at, heartbeat_at, slots, active) VALUES ('old-host:4242:cafe0001', 'old-host', 4242, 123456, 1700000000.0, 1700000030.0, 2, 1);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('cancel-me', 'echo never', 'canceled', 0, 3, 0, NULL, NULL, 1700003600.0, 1700000102.0, NULL, 1700000102.0, NULL, 'canceled', NULL, NULL, 0, NULL, NULL, NULL, NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('dead-1', 'false', 'dead', 2, 1, 0, NULL, NULL, 1700000000.0, 1700000100.5, 1700000100.0, 1700000100.5, 2, 'exit code 2 (boom)', NULL, NULL, 2, NULL, NULL, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('done-1', 'echo hello', 'completed', 0, 3, 5, NULL, NULL, 1700000000.0, 1700000000.6, 1700000000.1, 1700000000.6, 0, NULL, NULL, NULL, 1, NULL, NULL, 'old-host', 'hello
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('later-1', 'echo later', 'pending', 0, 3, 0, NULL, 1700003600.0, 1700003600.0, 1700000000.0, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('pending-now', 'echo ''quotes " and '''' and ; and
newline''', 'pending', 0, 3, -2, NULL, 1700010000.0, 1700010000.0, 1700000000.0, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('retry-then-done', 'test $QUEUECTL_ATTEMPT -ge 2', 'completed', 1, 2, 0, NULL, NULL, 1700000000.0, 1700000100.5, 1700000100.0, 1700000100.5, 0, NULL, NULL, NULL, 2, NULL, NULL, 'old-host', 'attempt 2
');
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('running-1', 'sleep 1000', 'processing', 0, 3, 1, NULL, 1700001000.0, 1700001000.0, 1700001000.0, 1700001000.0, NULL, NULL, NULL, 'old-host:4242:cafe0001', 1700001030.0, 1, 7777, 888, 'old-host', NULL);
INSERT INTO jobs (id, command, state, attempts, max_retries, priority, timeout_s, next_run_at, created_at, updated_at, started_at, finished_at, exit_code, last_error, owner, lease_expires_at, run, pid, proc_start, host, output_tail) VALUES ('waiting-retry', 'exit 3', 'failed', 2, 4, 0, 60.0, 1700000104.5, 1700000000.0, 1700000100.5, 1700000100.0, 1700000100.5, NULL, 'worker lost', NULL, NULL, 2, NULL, NULL, 'old-host', NULL);
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('dead-1', 2, 1700000100.0, 1700000100.5, 2, 'exit', 'exit code 2 (boom)', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('dead-1', 1, 1700000000.1, 1700000000.6, NULL, 'timeout', 'timeout', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('done-1', 1, 1700000000.1, 1700000000.6, 0, 'exit', NULL, 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('retry-then-done', 1, 1700000000.1, 1700000000.6, 1, 'exit', 'exit code 1', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('retry-then-done', 2, 1700000100.0, 1700000100.5, 0, 'exit', NULL, 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('running-1', 1, 1700001000.0, NULL, NULL, NULL, NULL, 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('waiting-retry', 2, 1700000100.0, 1700000100.5, NULL, 'worker lost', 'worker lost', 'old-host:4242:cafe0001');
INSERT INTO attempts (job_id, attempt, started_at, finished_at, exit_code, reason, error, owner) VALUES ('waiting-retry', 1, 1700000000.1, 1700000000.6, 3, 'exit', 'exit code 3', 'old-host:4242:cafe0001');
INSERT INTO state_count_deltas (state, n) VALUES ('canceled', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('completed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('completed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('dead', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('failed', -3);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', -4);
INSERT INTO state_count_deltas (state, n) VALUES ('pending', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 4);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', 3);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
INSERT INTO state_count_deltas (state, n) VALUES ('processing', -1);
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_insert();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_delete();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_update();
