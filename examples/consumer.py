"""A small consumer of unsubd updates, for a marketing system to start from.

Binds a durable queue to the topic exchange `unsubd.updates` with `preference.alumni.*`
(and `suppression.*`, since a suppressed address must not be mailed by anyone),
deduplicates by (event_id, sequence), ignores an update older than the one applied to
the same target (a contact's unit and channel, or an address's suppression), notices
gaps in a contact's sequence, and prints each update.

    python examples/consumer.py [--url amqp://guest:guest@127.0.0.1:5672/] [--queue crm.unsubd]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aio_pika


async def main(url: str, queue_name: str, bindings: list[str], exchange_name: str) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=50)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for key in bindings:
            await queue.bind(exchange, routing_key=key)
        seen: set[tuple[str, int]] = set()     # a real system keeps this in its database
        applied: dict[tuple[object, ...], int] = {}   # target -> sequence of the update applied there
        last_sequence: dict[int, int] = {}             # contact -> highest sequence seen
        print(f"waiting for updates on {queue_name} ({', '.join(bindings)}); Ctrl-C to stop")
        async with queue.iterator() as updates:
            async for message in updates:
                async with message.process():   # acknowledged after the block: redelivered if we crash
                    update = json.loads(message.body)
                    key = (update["event_id"], update["sequence"])
                    if key in seen:
                        continue                 # delivered again (at-least-once): already applied
                    seen.add(key)
                    contact, seq = update["contact_id"], update["sequence"]
                    # Updates may arrive out of order: compare with what was applied to the
                    # same target only; an older update for another unit or channel still counts.
                    target = (("suppression", update["address"]) if update["unit"] is None
                              else (contact, update["unit"], update["channel"]))
                    if seq <= applied.get(target, 0):
                        print(f"  (older update for contact {contact}: seq {seq}; a newer one was applied)")
                        continue
                    if seq > last_sequence.get(contact, 0) + 1:
                        print(f"  (contact {contact}: sequence jumped to {seq}; updates not bound here)")
                    applied[target] = seq
                    last_sequence[contact] = max(seq, last_sequence.get(contact, 0))
                    print(f"{message.routing_key:32} contact={contact} seq={seq} {update['address']} "
                          f"unit={update['unit']} channel={update['channel']} -> {update['state']} "
                          f"({update['reason']}, source {update['source']})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queue", default="example.alumni-crm")
    p.add_argument("--exchange", default="unsubd.updates")
    p.add_argument("--bind", action="append", default=None,
                   help="routing key pattern (repeatable); default preference.alumni.*, preference.all.*, suppression.*")
    args = p.parse_args()
    try:
        asyncio.run(main(args.url, args.queue, args.bind or ["preference.alumni.*", "preference.all.*", "suppression.*"],
                         args.exchange))
    except KeyboardInterrupt:
        pass
