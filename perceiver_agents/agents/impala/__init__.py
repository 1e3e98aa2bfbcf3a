"""IMPALA in acme's shape: config, networks, acting (actors and their backends), learning
(the V-trace loss) and builder (wires them into a learner Task). See docs/agents.md."""
