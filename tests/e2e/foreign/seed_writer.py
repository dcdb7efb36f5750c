"""An application that writes its own events the way seed 000's PHP `MongoEventStore` does.

`appendEvents`: a transaction, a `findOne` of the stream's last version, an `insertMany` of
documents in the seeds' shape (an ObjectId `_id`, no position), commit. Transactions that
conflict (another writer took the version) are retried from the start, as an application would.

Usage: seed_writer.py URI DATABASE TRANSACTIONS SEED FIRST_SEQ
Each event's metadata carries `seq`, counting this writer's events in its commit order (it
commits one transaction at a time), so a test can check the order positions were given in.
Prints the number of events written.
"""

import datetime
import random
import sys

from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError


def main():
    uri, database, transactions, seed, seq = sys.argv[1:6]
    rng = random.Random(int(seed))
    seq = int(seq)
    client = MongoClient(uri)
    events = client[database]["events"]
    written = 0
    for _ in range(int(transactions)):
        # Streams of its own, and a few that `refold append` writes too.
        if rng.random() < 0.2:
            stream = "payment-shared-%d" % rng.randrange(4)
        else:
            stream = "payment-legacy-%d" % rng.randrange(20)
        count = rng.randrange(1, 4)
        amounts = [round(rng.uniform(1, 500), 2) for _ in range(count)]
        while True:
            try:
                with client.start_session() as session:
                    with session.start_transaction():
                        last = events.find_one(
                            {"aggregateId": stream}, sort=[("version", -1)], session=session
                        )
                        version = (last["version"] if last else 0) + 1
                        docs = []
                        for i, amount in enumerate(amounts):
                            docs.append({
                                "aggregateId": stream,
                                "aggregateType": "Payment",
                                "eventType": "PaymentProcessed",
                                "eventData": {"amount": amount, "currency": "EUR", "status": "completed"},
                                "version": version + i,
                                "timestamp": datetime.datetime.now(datetime.timezone.utc),
                                "metadata": {"userId": "user-456", "organizationId": "org-%d" % (seq % 7), "seq": seq + i},
                            })
                        events.insert_many(docs, session=session)
                break
            except DuplicateKeyError:
                continue
            except PyMongoError as error:
                if error.has_error_label("TransientTransactionError"):
                    continue
                raise
        seq += count
        written += count
    print(written)


if __name__ == "__main__":
    main()
