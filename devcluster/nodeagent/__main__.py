"""``python -m devcluster.nodeagent``: what ``devcluster up`` starts."""

from devcluster.nodeagent.agent import main

main()
