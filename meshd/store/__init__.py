"""Where the node keeps data: the object host (replicas and group commit), the
heads database, the IPFS block store, the Archivist's records, the
quarantine of blocks that failed validation, and the reader that validates
peer blocks once (``peerblocks``).
"""
