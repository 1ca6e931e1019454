DROP TABLE IF EXISTS tasker.paused_namespaces;
