"""The live catalog: versioned snapshots of the items a GR model may recommend (snapshot.py), the changes they
take (changes.py, state.py), their durable log (change_log.py), and the versions' manager (live.py)."""
