//! sd_notify(3) client: READY, STATUS, WATCHDOG and STOPPING messages to systemd.
