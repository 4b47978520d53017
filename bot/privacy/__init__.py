"""Privacy: erasure and export of a learner's data (GDPR Art. 17 and 15), retention, and the
shared-phone PIN. Modules: `erasure`, `export`, `retention`, `pin`, `audit`, `tracker_store`,
`commands` (gateway command handlers), `cli` (`sanad learner ...`)."""
