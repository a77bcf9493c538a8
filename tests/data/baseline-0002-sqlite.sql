BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('0002');
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
INSERT INTO "attempts" VALUES('exit-ok',1,1700000001.0,1700000002.0,0,'exit',NULL,'old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('exit-dead',1,1700000001.0,1700000002.0,3,'exit','exit code 3','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('timeout-dead',1,1700000001.0,1700000002.0,NULL,'timeout','timed out after 5s','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('timeout-exited',1,1700000001.0,1700000002.0,1,'timeout','timed out after 5s','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('sigkill-dead',1,1700000001.0,1700000002.0,137,'killed','killed by SIGKILL','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('sigsegv-failed',1,1700000001.0,1700000002.0,139,'killed','killed by SIGSEGV','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('unknown-signal-failed',1,1700000001.0,1700000002.0,205,'killed','killed by signal 77','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('killed-lease',1,1700000001.0,1700000002.0,NULL,'killed','killed: its lease was lost','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('killed-unknown',1,1700000001.0,1700000002.0,NULL,'killed','exit status unknown','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('lost-failed',1,1700000001.0,1700000002.0,NULL,'worker lost','worker lost: daemon old-host:4242:cafe0001 stopped during the attempt','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('spawn-dead',1,1700000001.0,1700000002.0,NULL,'spawn failed','could not start /bin/sh: [Errno 24] Too many open files','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('canceled-running',1,1700000001.0,1700000003.0,NULL,'canceled','canceled while running','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('released',1,1700000001.0,1700000003.0,NULL,'requeued','stopped by `worker stop --now`; not counted','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('stray',1,1700000001.0,1700000003.0,NULL,'requeued','never started here: this daemon does not run it (e.g. the answer to its claim was lost); not counted','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('many-attempts',1,1700000001.0,1700000002.0,NULL,'timeout','timed out after 5s','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('dlq-retried',1,1700000001.0,1700000002.0,2,'exit','exit code 2','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('many-attempts',2,1700002000.0,1700002001.0,1,'exit','exit code 1','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('many-attempts',3,1700003000.0,1700003001.0,NULL,'worker lost','worker lost','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('many-attempts',4,1700004000.0,NULL,NULL,NULL,NULL,'old-host:4242:cafe0001');
CREATE TABLE config (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "config" VALUES('max-retries','4');
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
INSERT INTO "daemons" VALUES('old-host:4242:cafe0001','old-host',4242,123456,1700000000.0,1700000030.0,4,2);
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
INSERT INTO "jobs" VALUES('exit-ok','echo exit-ok','completed',0,3,0,NULL,NULL,1700000000.0,1700000002.0,1700000001.0,1700000002.0,0,NULL,NULL,NULL,1,NULL,NULL,'old-host','tail of exit-ok
');
INSERT INTO "jobs" VALUES('exit-dead','echo exit-dead','dead',1,0,0,NULL,NULL,1700000000.0,1700000002.0,1700000001.0,1700000002.0,3,'exit code 3',NULL,NULL,1,NULL,NULL,'old-host','tail of exit-dead
');
INSERT INTO "jobs" VALUES('timeout-dead','echo timeout-dead','dead',1,0,0,NULL,NULL,1700000000.0,1700000002.0,1700000001.0,1700000002.0,NULL,'timed out after 5s',NULL,NULL,1,NULL,NULL,'old-host','tail of timeout-dead
');
INSERT INTO "jobs" VALUES('timeout-exited','echo timeout-exited','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,1,'timed out after 5s',NULL,NULL,1,NULL,NULL,'old-host','tail of timeout-exited
');
INSERT INTO "jobs" VALUES('sigkill-dead','echo sigkill-dead','dead',1,0,0,NULL,NULL,1700000000.0,1700000002.0,1700000001.0,1700000002.0,137,'killed by SIGKILL',NULL,NULL,1,NULL,NULL,'old-host','tail of sigkill-dead
');
INSERT INTO "jobs" VALUES('sigsegv-failed','echo sigsegv-failed','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,139,'killed by SIGSEGV',NULL,NULL,1,NULL,NULL,'old-host','tail of sigsegv-failed
');
INSERT INTO "jobs" VALUES('unknown-signal-failed','echo unknown-signal-failed','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,205,'killed by signal 77',NULL,NULL,1,NULL,NULL,'old-host','tail of unknown-signal-failed
');
INSERT INTO "jobs" VALUES('killed-lease','echo killed-lease','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,NULL,'killed: its lease was lost',NULL,NULL,1,NULL,NULL,'old-host','tail of killed-lease
');
INSERT INTO "jobs" VALUES('killed-unknown','echo killed-unknown','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,NULL,'exit status unknown',NULL,NULL,1,NULL,NULL,'old-host','tail of killed-unknown
');
INSERT INTO "jobs" VALUES('lost-failed','echo lost-failed','failed',1,3,0,NULL,1700000004.0,1700000000.0,1700000002.0,1700000001.0,1700000002.0,NULL,'worker lost: daemon old-host:4242:cafe0001 stopped during the attempt',NULL,NULL,1,NULL,NULL,'old-host','tail of lost-failed
');
INSERT INTO "jobs" VALUES('spawn-dead','echo spawn-dead','dead',1,0,0,NULL,NULL,1700000000.0,1700000002.0,1700000001.0,1700000002.0,NULL,'could not start /bin/sh: [Errno 24] Too many open files',NULL,NULL,1,NULL,NULL,'old-host','tail of spawn-dead
');
INSERT INTO "jobs" VALUES('canceled-running','echo canceled-running','canceled',0,3,0,NULL,NULL,1700000000.0,1700000003.0,1700000001.0,1700000003.0,NULL,'canceled',NULL,NULL,1,2012,712,'old-host',NULL);
INSERT INTO "jobs" VALUES('released','echo released','pending',0,3,0,NULL,1700000003.0,1700000000.0,1700000003.0,1700000001.0,NULL,NULL,NULL,NULL,NULL,1,NULL,NULL,'old-host',NULL);
INSERT INTO "jobs" VALUES('stray','echo stray','pending',0,3,0,NULL,1700000000.0,1700000000.0,1700000003.0,1700000001.0,NULL,NULL,NULL,NULL,NULL,1,NULL,NULL,'old-host',NULL);
INSERT INTO "jobs" VALUES('many-attempts','echo many-attempts','processing',3,5,9,NULL,1700003009.0,1700000000.0,1700004000.0,1700004000.0,1700003001.0,NULL,'worker lost','old-host:4242:cafe0001',1700004030.0,4,NULL,NULL,'old-host',NULL);
INSERT INTO "jobs" VALUES('dlq-retried','echo dlq-retried','pending',0,0,0,NULL,1700000004.0,1700000000.0,1700000004.0,1700000001.0,NULL,NULL,NULL,NULL,NULL,1,NULL,NULL,'old-host','tail of dlq-retried
');
INSERT INTO "jobs" VALUES('never-ran','echo never-ran','pending',0,3,0,NULL,1700050000.0,1700050000.0,1700050000.0,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL);
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('schema_version','2');
INSERT INTO "meta" VALUES('queue_id','e29051eec51e68697aa3392d80e2d2ad');
CREATE TABLE state_counts (state VARCHAR(16) PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO "state_counts" VALUES('pending',4);
INSERT INTO "state_counts" VALUES('processing',1);
INSERT INTO "state_counts" VALUES('completed',1);
INSERT INTO "state_counts" VALUES('failed',6);
INSERT INTO "state_counts" VALUES('dead',4);
INSERT INTO "state_counts" VALUES('canceled',1);
CREATE INDEX ix_jobs_due ON jobs (priority DESC, next_run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX ix_jobs_next ON jobs (next_run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX ix_jobs_state_created ON jobs (state, created_at);
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
         WHEN OLD.state <> NEW.state BEGIN
         UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
         UPDATE state_counts SET n = n + 1 WHERE state = NEW.state; END;
COMMIT;
