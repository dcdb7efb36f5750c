// User profiles (seed 002), in JavaScript: the state of each user as a left fold of its events.
// The organization comes from the data, else the metadata, and is left out when neither has it.
import { ProjectionError, Update, collection, each, manifest, timestamp } from '../sdk/refold.js';

export function describe() {
  return manifest({
    name: 'user-profiles',
    version: 1,
    eventTypes: ['UserRegistered', 'UserRenamed', 'UserEmailChanged'],
    aggregateTypes: ['User'],
    collections: {
      users: [
        { name: 'by_email', fields: ['email'], unique: true },
        { name: 'by_organization', fields: ['organizationId'] },
      ],
    },
  });
}

const users = collection('users');

export const handle = each((event) => {
  const id = event.aggregateId;
  const data = JSON.parse(event.data);
  if (event.eventType === 'UserRegistered') {
    const profile = { userId: id, name: data.name, email: data.email };
    const organization = data.organizationId ?? JSON.parse(event.metadata).organizationId;
    if (organization != null) profile.organizationId = organization;
    Object.assign(profile, {
      registeredAt: timestamp(event),
      names: [data.name],
      emailChanges: 0,
      version: event.version,
    });
    users.put(id, profile);
  } else if (event.eventType === 'UserRenamed') {
    const update = new Update().set('name', data.name).push('names', data.name).set('version', event.version);
    if (!users.updateExisting(id, update)) {
      throw new ProjectionError('invalid-state', `UserRenamed for unknown user ${id}`);
    }
  } else if (event.eventType === 'UserEmailChanged') {
    const update = new Update().set('email', data.email).inc('emailChanges', 1).set('version', event.version);
    if (!users.updateExisting(id, update)) {
      throw new ProjectionError('invalid-state', `UserEmailChanged for unknown user ${id}`);
    }
  }
});
