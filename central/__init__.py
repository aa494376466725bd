"""The central side: ingesters, the central store and blob tree, and the dataset tools.

``central.ingester`` receives what devices publish, ``central.intake`` validates and stores each
message, ``central.store`` / ``central.pgstore`` hold records (SQLite or PostgreSQL) and
``central.blobs`` / ``central.staging`` the media; ``central.datasets`` exports, reports and imports
reviews. The device agent never imports this package (a test checks the import graph).
"""
