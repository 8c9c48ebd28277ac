"""The compute market's off-chain roles (issue 6): workers that compute replicated units and the job's coordinator
that merges each stage (the demo that runs a job end to end is fedchain.app.market_demo). Imports chain, storage
and learning only."""
