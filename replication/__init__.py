"""Phase B replication: model, rendered SQL, bootstrap and the write-quorum decision."""
