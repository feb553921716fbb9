-- creek.* settings: defaults, and clear errors for bad values.
SHOW creek.namespace;
SHOW creek.max_in_flight;
SHOW creek.producer_name;
SHOW creek.ack_timeout;
SHOW creek.stream_storage;
SHOW creek.stream_duplicate_window;
SHOW creek.ordered_publish;
SHOW creek.snapshot_on_slot_loss;

-- settings that need a reload cannot be set in a session
SET creek.namespace = 'OTHER';
-- bad values are refused when set
ALTER SYSTEM SET creek.namespace = 'a.b';
ALTER SYSTEM SET creek.namespace = '';
ALTER SYSTEM SET creek.max_in_flight = 0;
ALTER SYSTEM SET creek.stream_storage = 'disk';
ALTER SYSTEM SET creek.nats_url = '';
-- the creek. prefix is reserved
SET creek.no_such_setting = 1;
-- URLs: known schemes, no credentials (Postgres logs setting values)
ALTER SYSTEM SET creek.nats_url = 'http://127.0.0.1:4222';
ALTER SYSTEM SET creek.nats_url = 'nats://user:secret@127.0.0.1:4222';
ALTER SYSTEM SET creek.nats_url = 'nats://127.0.0.1:4222,,nats://127.0.0.1:4223';
ALTER SYSTEM SET creek.nats_url = 'nats://127.0.0.1:4222,';
ALTER SYSTEM SET creek.nats_url = 'nats://';
ALTER SYSTEM SET creek.nats_url = 'nats://:4222';
-- secret files: absolute paths
ALTER SYSTEM SET creek.nats_password_file = 'relative/password';
ALTER SYSTEM SET creek.nats_tls_ca_file = 'ca.pem';
-- secrets are not shown to everyone
CREATE ROLE creek_settings_plain;
SET ROLE creek_settings_plain;
SHOW creek.nats_password_file;
RESET ROLE;
DROP ROLE creek_settings_plain;
-- stream size and connect timeout
SHOW creek.stream_max_bytes;
SHOW creek.nats_connect_timeout;
SHOW creek.nats_reconnect_wait;
ALTER SYSTEM SET creek.nats_reconnect_wait = '1ms';
ALTER SYSTEM SET creek.stream_max_bytes = -2;
ALTER SYSTEM SET creek.nats_connect_timeout = '10ms';
