// Package queues holds the runnable examples of docs/QUEUES.md; its tests run them.
package queues
