BEGIN TRANSACTION;
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
INSERT INTO "attempts" VALUES('done-1',1,1700000000.1,1700000000.6,0,'exit',NULL,'old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('retry-then-done',1,1700000000.1,1700000000.6,1,'exit','exit code 1','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('dead-1',1,1700000000.1,1700000000.6,NULL,'timeout','timeout','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('waiting-retry',1,1700000000.1,1700000000.6,3,'exit','exit code 3','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('retry-then-done',2,1700000100.0,1700000100.5,0,'exit',NULL,'old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('dead-1',2,1700000100.0,1700000100.5,2,'exit','exit code 2 (boom)','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('waiting-retry',2,1700000100.0,1700000100.5,NULL,'worker lost','worker lost','old-host:4242:cafe0001');
INSERT INTO "attempts" VALUES('running-1',1,1700001000.0,NULL,NULL,NULL,NULL,'old-host:4242:cafe0001');
CREATE TABLE config (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "config" VALUES('backoff-base','3');
INSERT INTO "config" VALUES('max-retries','5');
INSERT INTO "config" VALUES('job-timeout','120.5');
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
INSERT INTO "daemons" VALUES('old-host:4242:cafe0001','old-host',4242,123456,1700000000.0,1700000030.0,2,1);
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
INSERT INTO "jobs" VALUES('done-1','echo hello','completed',0,3,5,NULL,NULL,1700000000.0,1700000000.6,1700000000.1,1700000000.6,0,NULL,NULL,NULL,1,NULL,NULL,'old-host','hello
');
INSERT INTO "jobs" VALUES('retry-then-done','test $QUEUECTL_ATTEMPT -ge 2','completed',1,2,0,NULL,NULL,1700000000.0,1700000100.5,1700000100.0,1700000100.5,0,NULL,NULL,NULL,2,NULL,NULL,'old-host','attempt 2
');
INSERT INTO "jobs" VALUES('dead-1','false','dead',2,1,0,NULL,NULL,1700000000.0,1700000100.5,1700000100.0,1700000100.5,2,'exit code 2 (boom)',NULL,NULL,2,NULL,NULL,'old-host',NULL);
INSERT INTO "jobs" VALUES('waiting-retry','exit 3','failed',2,4,0,60.0,1700000104.5,1700000000.0,1700000100.5,1700000100.0,1700000100.5,NULL,'worker lost',NULL,NULL,2,NULL,NULL,'old-host',NULL);
INSERT INTO "jobs" VALUES('running-1','sleep 1000','processing',0,3,1,NULL,1700001000.0,1700001000.0,1700001000.0,1700001000.0,NULL,NULL,NULL,'old-host:4242:cafe0001',1700001030.0,1,7777,888,'old-host',NULL);
INSERT INTO "jobs" VALUES('later-1','echo later','pending',0,3,0,NULL,1700003600.0,1700003600.0,1700003600.0,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL);
INSERT INTO "jobs" VALUES('cancel-me','echo never','canceled',0,3,0,NULL,NULL,1700003600.0,1700000102.0,NULL,1700000102.0,NULL,'canceled',NULL,NULL,0,NULL,NULL,NULL,NULL);
INSERT INTO "jobs" VALUES('pending-now','echo ''quotes " and '''' and ; and
newline''','pending',0,3,-2,NULL,1700010000.0,1700010000.0,1700010000.0,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL);
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE state_counts (state VARCHAR(16) PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO "state_counts" VALUES('pending',2);
INSERT INTO "state_counts" VALUES('processing',1);
INSERT INTO "state_counts" VALUES('completed',2);
INSERT INTO "state_counts" VALUES('failed',1);
INSERT INTO "state_counts" VALUES('dead',1);
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
