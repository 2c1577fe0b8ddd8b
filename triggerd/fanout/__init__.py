"""AWS's fan-out services served by triggerd on the control listener: SNS-compatible topics
(`triggerd.fanout.sns`) and EventBridge-compatible event buses (`triggerd.fanout.events`).

Both turn one published message or event into asynchronous invocations of the subscribed
functions, through the functions' durable Event queues (the Invoke API's), so a publish is
answered only once every invocation it causes is committed to the state store."""
