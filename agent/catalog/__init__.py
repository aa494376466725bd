"""Keep: the local catalog (SQLite WAL), its migrations and row helpers, the media tree and the writer.

The durability point is the catalog commit that writes a capture row and its outbox row together,
after the media file is on disk under its final name (``writer``); ``recovery`` makes the two agree
after a crash and ``integrity`` checks that they do.
"""
