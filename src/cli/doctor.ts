export default function doctor(): void {
  throw new Error('not yet');
}
