"""The serving process: the first mile's live decisions, read by the application over HTTP while the visitor is
still on the page.

``python -m streaming.serving`` reads ``profiles`` and ``profiles.devices`` (what stage 2 publishes after every
decided event, :mod:`streaming.profile_view`) and ``control.erasure`` outside any consumer group — every replica
holds every profile, like the policy broadcast — into a local RocksDB store that survives a restart, and answers:

* ``GET /v1/profiles/{profile_id}``, ``GET /v1/profiles?anonymousId=…`` / ``?userId=…`` — the live profile, each
  field shown only if the purpose it needs is granted now (:data:`streaming.profile_view.FIELD_PURPOSES`);
* ``?after=<token>`` (the collector's 200 returns the token): read-your-writes, bounded wait;
* ``GET /v1/profiles/{profile_id}/stream`` — server-sent events of the profile's decision changes;
* ``GET /profiles/{profile_id}`` — the profile inspector (HTML): live state and the ledgers of its recent events.

Modules: ``config`` (settings and keys), ``store`` (the local store and the topic reader), ``api`` (the ASGI app),
``inspector`` (the HTML page).
"""
