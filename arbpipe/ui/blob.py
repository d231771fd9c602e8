"""The dashboard's published view: the name of the state blob the dashboard process writes
(``arbpipe.ui.dashboard``) and every attach, tool and benchmark reads
(``arbpipe.transport.stateblob.read_blob``), and the version of the document in it."""

STATE_BLOB = "dashboard.state"
STATE_VERSION = 1
