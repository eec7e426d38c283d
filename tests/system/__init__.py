"""System suites: syncd run as users and operators run it (a process, systemd,
nginx, Prometheus rules, a simulated store, faults), end to end."""
