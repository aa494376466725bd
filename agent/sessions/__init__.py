"""Sessions and takes, the alignment index across streams, and the MCAP export of a session."""
