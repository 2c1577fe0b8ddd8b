"""Turning other tools' definitions of functions and triggers into triggerd config: AWS SAM
templates (`sam`) and Serverless Framework files (`serverless`). Each translator returns a
`common.Translation`: the triggerd config as the plain data a TOML file would hold, and a
warning for every property it could not carry over (never dropped silently)."""
