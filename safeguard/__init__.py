"""The ``safeguard`` command line and what runs beside it, above ``gateway``, ``edge_agent`` and
``simulators`` (docs/architecture.md): ``cli`` (every command), ``demo`` and ``demo_settings``
(``safeguard demo`` and how the other commands find it), ``devservers`` (throwaway PostgreSQL
and Mosquitto for the tests, the demo and the benches) and ``receivers`` (local stand-ins for
the notifier's receivers, for the tests and the benches)."""
