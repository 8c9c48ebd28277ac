"""The compute market's off-chain roles (issue 6): workers that compute replicated units, the job's coordinator that
merges each stage, and the demo that runs a job end to end. Imports chain, storage and learning only."""
