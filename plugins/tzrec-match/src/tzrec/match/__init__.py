"""tzrec-match: match (retrieval) models (DSSMv2, DAT, MIND) as a tzrec plugin."""
