"""Learning tier: training sets → teacher → distilled first-mile student, mined rules, backtest, gated promotion.

Never talks to Kafka: publication is orchestration's job. Depends on ``streaming.policy`` (the contract of what
the hot path can run) and ``warehouse`` (where history lives).
"""
