"""UmaDB's official Python client (PyPI `umadb==0.7.8`) against a server: every RPC and error.

    python client.py URL [--ca CA_PEM --api-key KEY] [--dcbstore]

Run by .ci/run against dcbstore's server (in memory and on PostgreSQL) and against UmaDB's own
server, so that what it expects is the protocol's behaviour, not this server's. `--dcbstore` adds
the checks where dcbstore is stricter than UmaDB (the same ids with other content are refused).
UmaDB's client sends an API key only over TLS: `--api-key` needs `--ca` and an https URL.
Prints one line per check; exits non-zero on the first failure.
"""

import argparse

import json
import time
import uuid

import umadb
from umadb import AppendCondition, Client, Event, Query, QueryItem, TrackingInfo

arguments = argparse.ArgumentParser()
arguments.add_argument("url")
arguments.add_argument("--ca")
arguments.add_argument("--api-key")
arguments.add_argument("--dcbstore", action="store_true")
args = arguments.parse_args()
URL, KEY = args.url, args.api_key
RUN = uuid.uuid4().hex[:8]  # fresh tags and sources: the script can run again on one store


def check(name, condition):
    if not condition:
        raise SystemExit(f"FAILED: {name}")
    print(f"ok: {name}")


def raises(name, error, call):
    try:
        call()
    except error as e:
        print(f"ok: {name} raises {type(e).__name__}")
        return
    except Exception as e:  # noqa: BLE001 - report what came instead
        raise SystemExit(f"FAILED: {name} raised {type(e).__name__}: {e}")
    raise SystemExit(f"FAILED: {name} raised nothing")


client = Client(URL, ca_path=args.ca, api_key=KEY)
tag = f"student:{RUN}"

# Append and read back, byte for byte: JSON with its spacing, text, binary, empty; metadata.
sent = [
    Event("Registered", b'{ "name" :"Ada",  "score": 1.50 }', [tag], uuid.uuid4(), {"by": "py", "n": "1"}),
    Event("Note", b"plain text", [tag], uuid.uuid4()),
    Event("Blob", bytes([0, 159, 146, 150, 255]), [tag, "blob"], uuid.uuid4()),
    Event("Empty", b"", [tag], uuid.uuid4()),
]
first_time = AppendCondition(Query([QueryItem(tags=[tag])]), None)
last = client.append(sent, first_time)
events, head = client.read(Query([QueryItem(tags=[tag])])).collect_with_head()
check("append returns the last position, read's head is at or past it", head is not None and head >= last)
check("read returns the events in order", [e.event.uuid for e in events] == [e.uuid for e in sent])
check("data comes back byte for byte", [bytes(e.event.data) for e in events] == [bytes(e.data) for e in sent])
check("types, tags and metadata come back",
      [(e.event.event_type, e.event.tags, e.event.metadata) for e in events]
      == [(e.event_type, e.tags, e.metadata) for e in sent])
positions = [e.position for e in events]
check("positions increase", positions == sorted(positions) and len(set(positions)) == len(positions))
check("the last position is the append's", positions[-1] == last)

# Replays: the same request again (a client retrying after a lost answer) is the original
# append; the same ids with other content are refused.
check("a replay returns the original position", client.append(sent, first_time) == last)
changed = [Event("Registered", b"{}", [tag], sent[0].uuid)] + sent[1:]
if args.dcbstore:
    raises("the same ids with other content", umadb.IntegrityError, lambda: client.append(changed, first_time))

# Reads: start, backwards, limit, type filters.
forward = [e.position for e in client.read(Query([QueryItem(tags=[tag])]), start=positions[1])]
check("start is inclusive", forward == positions[1:])
backward = [e.position for e in client.read(Query([QueryItem(tags=[tag])]), backwards=True)]
check("backwards reads newest first", backward == positions[::-1])
limited = client.read(Query([QueryItem(tags=[tag])]), limit=2)
check("limit", [e.position for e in limited] == positions[:2])
typed = list(client.read(Query([QueryItem(types=["Note", "Blob"], tags=[tag])])))
check("types are OR-ed, tags AND-ed", [e.event.event_type for e in typed] == ["Note", "Blob"])
both = list(client.read(Query([QueryItem(types=["Note"], tags=[tag]), QueryItem(tags=["blob", tag])])))
check("items are OR-ed", [e.event.event_type for e in both] == ["Note", "Blob"])

# Head.
check("head is the last position", client.head() == client.read(backwards=True, limit=1).collect_with_head()[0][0].position)

# A decision: read, decide, append guarded by the read's head.
name = f"username:{RUN}"
claim_query = Query([QueryItem(types=["Claimed"], tags=[name])])
seen, after = client.read(claim_query).collect_with_head()
condition = AppendCondition(claim_query, after)
client.append([Event("Claimed", json.dumps({"by": "first"}).encode(), [name], uuid.uuid4())], condition)
raises("a stale decision", umadb.IntegrityError,
       lambda: client.append([Event("Claimed", b'{"by":"second"}', [name], uuid.uuid4())], condition))
seen, after = client.read(claim_query).collect_with_head()
check("the decision's event is there once", len(seen) == 1)
client.append([Event("Released", b"{}", [name], uuid.uuid4())], AppendCondition(claim_query, after))
check("a fresh decision goes through", len(list(client.read(Query([QueryItem(tags=[name])])))) == 2)

# Tracking: moves forward with its append, and only forward.
source = f"projection-{RUN}"
check("no tracking yet", client.get_tracking_info(source) is None)
client.append([Event("Tracked", b"{}", [tag], uuid.uuid4())], tracking_info=TrackingInfo(source, 10))
check("tracking recorded", client.get_tracking_info(source) == 10)
raises("a non-increasing tracking position", umadb.IntegrityError,
       lambda: client.append([Event("Tracked", b"{}", [tag], uuid.uuid4())], tracking_info=TrackingInfo(source, 10)))
check("the refused append wrote nothing", len(list(client.read(Query([QueryItem(types=["Tracked"], tags=[tag])])))) == 1)

# Subscribe: what exists after a position, then what comes.
subscription = client.subscribe(Query([QueryItem(tags=[tag])]), after=positions[1])
got = [next(subscription).position for _ in range(len(positions) - 2)]
check("a subscription starts after its position", got == positions[2:])
new = client.append([Event("Later", b"{}", [tag], uuid.uuid4())])
later = next(subscription)
while later.event.event_type != "Later":
    later = next(subscription)
check("a subscription delivers new events", later.position == new)
subscription.cancel()

# Bad input (UmaDB stores an empty event type; dcbstore refuses it and writes nothing).
if args.dcbstore:
    before = client.head()
    raises("an empty event type", ValueError, lambda: client.append([Event("", b"{}", [tag], uuid.uuid4())]))
    check("the refused append wrote nothing", client.head() == before)

# The API key.
if KEY is not None:
    raises("a wrong API key", umadb.AuthenticationError, lambda: Client(URL, ca_path=args.ca, api_key="wrong").head())
client.close()
print("all checks passed")
