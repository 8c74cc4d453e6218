"""Runs inside a virtualenv holding one real DocEX release, as a subprocess (DocEX keeps
singletons and global configuration). Usage: python docex_driver.py '<json arguments>'.

Arguments: workdir, tenant, database (DocEX's database config), action:
- "use": create basket `basket`, add a file to it, then list; prints the baskets and documents.
- "list": prints the baskets and the documents in each.
"""

import json
import logging
import os
import sys

logging.disable(logging.CRITICAL)
args = json.loads(sys.argv[1])
os.chdir(args["workdir"])

from docex import DocEX  # noqa: E402
from docex.context import UserContext  # noqa: E402

DocEX.setup(
    database=args["database"],
    security={"multi_tenancy_model": "database_level", "tenant_database_routing": True},
)
docex = DocEX(user_context=UserContext(user_id="alice", tenant_id=args["tenant"]))
if args["action"] == "use":
    basket = docex.create_basket(args["basket"])
    with open(f"{args['basket']}.txt", "w") as handle:
        handle.write("hello from " + args["basket"])
    basket.add(f"{args['basket']}.txt")
baskets = docex.list_baskets()
print(
    json.dumps(
        {
            "baskets": sorted(b.name for b in baskets),
            "documents": sorted(d.name for b in baskets for d in b.list_documents()),
        }
    )
)
