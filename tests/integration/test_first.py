from __future__ import annotations

import pytest

from gateway.runtime import Gateway
from tests.support import Agent, Api, wait_for

pytestmark = pytest.mark.integration


def test_smoke_alarm_becomes_fire_alarm(gateway: Gateway) -> None:
    api = Api(gateway.api_url)
    api.put_site("site-1", name="One", city="Hangzhou", county="Xihu", cameras_required=1)
    agent = Agent(gateway.settings.mqtt.url, "site-1")
    agent.birth([{"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"}])
    agent.smoke("smoke-1", "alarm")
    alert = wait_for(lambda: api.alert(kind="fire_alarm", site="site-1"), what="fire alarm")
    assert alert["device"] == "smoke-1"
    assert alert["severity"] == "critical"
    agent.close()
