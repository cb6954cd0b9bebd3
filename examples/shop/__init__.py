"""A tiny shop of three HTTP services on loopback: orders, payments, notifications.

``orders`` takes an order and places it as a saga (reserve stock, charge the payment, send a
notification; compensations release the stock and refund the charge), calling ``payments`` and
``notifications`` over HTTP through named ``resilient`` policies configured from the
environment. ``payments`` and ``notifications`` have a fault switch (``POST /chaos``) so the
demo and the tests can break and heal them while orders keep coming.

Start one service with ``python -m examples.shop.<service> --port 0`` (it prints the URL it
listens on), or all three with :class:`examples.shop.cluster.ShopCluster`.
"""
